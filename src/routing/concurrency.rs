//! Requests in flight per client on one route: ingress-nginx's `limit-connections`
//! (nginx's `limit_conn`, which counts the requests a client has open at a location). A
//! request takes a slot when it is routed and gives it back when it ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The in-flight requests of each client on one route, and the limit.
pub struct ClientConcurrency {
    limit: u32,
    in_flight: Mutex<HashMap<IpAddr, u32>>,
}

/// The client already has the limit's number of requests in flight.
#[derive(Debug, PartialEq, Eq)]
pub struct AtLimit;

/// One request's slot; dropping it frees the slot.
pub struct ConcurrencySlot {
    owner: Arc<ClientConcurrency>,
    client: IpAddr,
}

impl ClientConcurrency {
    /// At most `limit` requests in flight per client.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The limit this enforces (to keep the counts across rebuilds that keep it).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Counts stay consistent even if a holder panicked.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a request of `client`, or `Err` when the client has `limit` requests in
    /// flight already. A request whose client is unknown is not counted.
    pub fn acquire(
        self: &Arc<Self>,
        client: Option<IpAddr>,
    ) -> Result<Option<ConcurrencySlot>, AtLimit> {
        let Some(client) = client else {
            return Ok(None);
        };
        let mut counts = self.counts();
        let count = counts.entry(client).or_insert(0);
        if *count >= self.limit {
            return Err(AtLimit);
        }
        *count += 1;
        Ok(Some(ConcurrencySlot {
            owner: self.clone(),
            client,
        }))
    }

    /// Requests in flight of `client`.
    pub fn in_flight(&self, client: IpAddr) -> u32 {
        self.counts().get(&client).copied().unwrap_or(0)
    }
}

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts();
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_client_and_freed_on_drop() {
        let limit = Arc::new(ClientConcurrency::new(2));
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let first = limit.acquire(Some(a)).expect("first");
        let second = limit.acquire(Some(a)).expect("second");
        assert!(
            limit.acquire(Some(a)).is_err(),
            "a third in flight is refused"
        );
        assert!(
            limit.acquire(Some(b)).is_ok(),
            "other clients have their own count"
        );
        drop(first);
        assert_eq!(limit.in_flight(a), 1);
        let third = limit.acquire(Some(a)).expect("a freed slot is taken again");
        drop((second, third));
        assert_eq!(limit.in_flight(a), 0);
        assert!(limit.counts().is_empty(), "idle clients leave no entry");
        assert!(matches!(limit.acquire(None), Ok(None)));
    }
}
