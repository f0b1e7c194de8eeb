//! [`Compilation`]: the compiler's result kept between changes, so that a change of one
//! fragment among thousands re-admits that fragment instead of all of them.
//!
//! A change releases the changed fragments' claims and admits their new versions against
//! the claims of every other accepted fragment, older and newer. When no claim stands in
//! the way, and no rejected fragment tried to claim a key the change touches (its problems
//! list the claims older fragments hold), the result is the one a full compile gives:
//! every other fragment's outcome depends only on keys the change did not touch. Otherwise [`Compilation::change`] says
//! so, and the caller compiles everything again ([`Compilation::full`]), which decides
//! conflicts by precedence.

use super::{Admission, Compiled, Compiler, OwnedClaims};
use crate::model::{ClientValidation, Config, Fragment, HostMatch, Problem, Rejected};
use crate::tls::LoadedCertificate;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Where a fragment stands in precedence order: its precedence, then its source and key
/// (two fragments of equal precedence still have one place each).
type Rank = ((bool, i64, String), String, String);

/// One fragment on offer, and what the compiler made of it.
struct Entry {
    fragment: Arc<Fragment>,
    /// The claims it holds, or its problems.
    outcome: Result<OwnedClaims, Vec<Problem>>,
    /// Hashes of every key it tried to claim, sorted.
    footprint: Vec<u64>,
    /// It left a match another fragment holds to that one.
    yielded: bool,
}

impl Entry {
    /// Admits `fragment`; also says whether a claim of another fragment stood in its way.
    fn admitted(compiler: &mut Compiler, fragment: Arc<Fragment>) -> (Self, bool) {
        let Admission {
            result,
            footprint,
            conflicted,
            yielded,
        } = compiler.admit_tracked(&fragment);
        let entry = Self {
            fragment,
            outcome: result,
            footprint,
            yielded,
        };
        (entry, conflicted)
    }

    fn shares_a_key_with(&self, footprint: &[u64]) -> bool {
        footprint
            .iter()
            .any(|hash| self.footprint.binary_search(hash).is_ok())
    }
}

/// A change [`Compilation::change`] cannot apply alone: a claim conflict or a rejection
/// it may undo needs precedence to decide. The compilation is left half-changed; build it
/// again with [`Compilation::full`].
#[derive(Debug, PartialEq)]
pub struct NeedsFullCompile;

/// Every fragment on offer with its outcome, in precedence order.
pub struct Compilation {
    settings: Config,
    compiler: Compiler,
    entries: BTreeMap<Rank, Entry>,
    /// The rank of each (source, key).
    ranks: HashMap<(String, String), Rank>,
}

impl Compilation {
    /// Compiles `fragments` (source, key, fragment) onto `settings` from scratch.
    pub fn full(
        settings: &Config,
        fragments: impl IntoIterator<Item = (String, String, Arc<Fragment>)>,
    ) -> Self {
        let mut ranked: Vec<(Rank, Arc<Fragment>)> = fragments
            .into_iter()
            .map(|(source, key, fragment)| ((fragment.precedence(), source, key), fragment))
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        let mut compiler = Compiler::new(&settings.listeners).with_redis(settings.redis.is_some());
        let mut entries = BTreeMap::new();
        let mut ranks = HashMap::with_capacity(ranked.len());
        for (rank, fragment) in ranked {
            ranks.insert((rank.1.clone(), rank.2.clone()), rank.clone());
            entries.insert(rank, Entry::admitted(&mut compiler, fragment).0);
        }
        Self {
            settings: settings.clone(),
            compiler,
            entries,
            ranks,
        }
    }

    /// Sets (`Some`) or removes (`None`) fragments `key` of `source`, re-admitting only
    /// them, or finds that precedence must decide and a full compile is needed.
    pub fn change(
        &mut self,
        source: &str,
        changes: &[(String, Option<Arc<Fragment>>)],
    ) -> Result<(), NeedsFullCompile> {
        let mut touched: Vec<u64> = Vec::new();
        for (key, _) in changes {
            let Some(rank) = self.ranks.remove(&(source.to_string(), key.clone())) else {
                continue;
            };
            if let Some(old) = self.entries.remove(&rank) {
                if let Ok(owned) = &old.outcome {
                    self.compiler.release(owned);
                }
                touched.extend(old.footprint);
            }
        }
        let mut added: Vec<(Rank, Arc<Fragment>)> = changes
            .iter()
            .filter_map(|(key, fragment)| {
                let fragment = fragment.clone()?;
                Some((
                    (fragment.precedence(), source.to_string(), key.clone()),
                    fragment,
                ))
            })
            .collect();
        added.sort_by(|a, b| a.0.cmp(&b.0));
        self.no_dependent_meets(&touched)?;
        let mut admitted = Vec::with_capacity(added.len());
        for (rank, fragment) in added {
            let (entry, conflicted) = Entry::admitted(&mut self.compiler, fragment);
            if conflicted {
                return Err(NeedsFullCompile);
            }
            admitted.push((rank, entry));
        }
        let touched_now: Vec<u64> = admitted
            .iter()
            .flat_map(|(_, entry)| entry.footprint.iter().copied())
            .collect();
        self.no_dependent_meets(&touched_now)?;
        for (rank, entry) in admitted {
            self.ranks
                .insert((rank.1.clone(), rank.2.clone()), rank.clone());
            self.entries.insert(rank, entry);
        }
        Ok(())
    }

    /// Fails if a rejected or yielding fragment tried to claim one of the keys of
    /// `footprint`: a rejected one's problems list the claims older fragments hold, so it
    /// may be accepted now, or have other problems; a yielding one may hold a match now.
    fn no_dependent_meets(&self, footprint: &[u64]) -> Result<(), NeedsFullCompile> {
        let met = self.entries.values().any(|entry| {
            (entry.outcome.is_err() || entry.yielded) && entry.shares_a_key_with(footprint)
        });
        if met {
            return Err(NeedsFullCompile);
        }
        Ok(())
    }

    /// The effective model: the settings with every accepted fragment, in precedence order.
    pub fn compiled(&self) -> Compiled {
        let mut config = self.settings.clone();
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        let mut certificates: HashMap<&str, Vec<LoadedCertificate>> = HashMap::new();
        let mut scopes: HashMap<&str, Vec<Option<HostMatch>>> = HashMap::new();
        let mut validations: HashMap<&str, &Arc<ClientValidation>> = HashMap::new();
        for ((_, source, _), entry) in &self.entries {
            let fragment = &entry.fragment;
            match &entry.outcome {
                Ok(_) => {
                    config.routes.extend(fragment.routes.iter().cloned());
                    config.upstreams.extend(fragment.upstreams.iter().cloned());
                    for offered in &fragment.certificates {
                        certificates
                            .entry(offered.listener.as_str())
                            .or_default()
                            .push(offered.certificate.clone());
                    }
                    // The first fragment in precedence order decides (a Gateway's own
                    // listeners have one Gateway).
                    for asked in &fragment.client_validations {
                        validations
                            .entry(asked.listener.as_str())
                            .or_insert(&asked.validation);
                    }
                    for reserved in &fragment.reserved_hosts {
                        if !config.reserved_hosts.contains(reserved) {
                            config.reserved_hosts.push(reserved.clone());
                        }
                    }
                    for scope in &fragment.server_name_scopes {
                        let listed = scopes.entry(scope.listener.as_str()).or_default();
                        if !listed.contains(&scope.hostname) {
                            listed.push(scope.hostname.clone());
                        }
                    }
                    accepted.push((source.clone(), fragment.origin.clone()));
                }
                Err(problems) => rejected.push(Rejected {
                    source: source.clone(),
                    origin: fragment.origin.clone(),
                    problems: problems.clone(),
                }),
            }
        }
        for listener in &mut config.tls {
            if let Some(extra) = certificates.get(listener.listener.as_str()) {
                let mut all = listener.certificates.to_vec();
                all.extend(extra.iter().cloned());
                listener.certificates = all.into();
            }
            if let Some(listed) = scopes.remove(listener.listener.as_str()) {
                listener.server_name_scopes = listed;
            }
            listener.client_validation = validations
                .get(listener.listener.as_str())
                .cloned()
                .cloned();
        }
        Compiled {
            config,
            accepted,
            rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, Offered};
    use crate::model::{EndpointConfig, EndpointSource, Origin, PathMatch, RouteConfig};
    use crate::model::{HostMatch, Overlap, UpstreamConfig};
    use std::net::SocketAddr;

    fn settings() -> Config {
        crate::sources::file::parse(
            std::path::Path::new("t.yaml"),
            "listeners: [{ name: web, listen: \"127.0.0.1:1\" }]\n",
        )
        .expect("valid")
        .settings
    }

    /// Object `name` created at `created`, routing `host` and `path` (small domains, so
    /// random fragments often conflict); `bad` gives it a problem of its own.
    fn object(name: &str, created: i64, host: &str, path: &str, bad: bool) -> Fragment {
        let origin = Origin::object("Test", "default", name);
        let mut fragment = Fragment::new(origin.clone(), Some(created));
        // Odd creation times yield overlapping matches, as Gateway API routes do.
        if created % 2 == 1 {
            fragment.overlap = Overlap::Yielded;
        }
        let upstream_name = format!("u-{name}");
        let address: SocketAddr = ([127, 0, 0, 1], 2).into();
        let mut upstream = UpstreamConfig::new(
            &upstream_name,
            origin.clone(),
            EndpointSource::Static,
            vec![EndpointConfig {
                address,
                weight: 1,
                terminating: false,
            }],
        );
        if bad {
            upstream.retry.attempts = 50;
        }
        let mut route = RouteConfig::new(name, origin, "web", &upstream_name);
        route.hosts = vec![HostMatch::Exact(host.into())];
        route.paths = vec![PathMatch::Prefix(path.into())];
        fragment.routes.push(Arc::new(route));
        fragment.upstreams.push(Arc::new(upstream));
        fragment
    }

    /// What a comparison of two results looks at: outcomes, problems and the model's order.
    fn outline(compiled: &Compiled) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            compiled
                .accepted
                .iter()
                .map(|(_, o)| o.to_string())
                .collect(),
            compiled
                .rejected
                .iter()
                .map(|r| format!("{}: {:?}", r.origin, r.problems))
                .collect(),
            compiled
                .config
                .routes
                .iter()
                .map(|r| r.name.clone())
                .collect(),
        )
    }

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Random(u64);

    impl Random {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn changes_give_what_a_full_compile_gives() {
        let settings = settings();
        let mut random = Random(0x5eed_1234_abcd_0001);
        let mut live: BTreeMap<String, Arc<Fragment>> = BTreeMap::new();
        let mut compilation = Compilation::full(&settings, Vec::new());
        let (mut incremental, mut fallbacks) = (0, 0);
        for step in 0..3_000 {
            let mut changes = Vec::new();
            for _ in 0..=random.below(2) {
                let key = format!("o{}", random.below(12));
                let fragment = (random.below(5) != 0).then(|| {
                    let host = format!("h{}", random.below(4));
                    let path = format!("/{}", random.below(3));
                    let created = random.below(6) as i64;
                    Arc::new(object(&key, created, &host, &path, random.below(10) == 0))
                });
                changes.retain(|(k, _): &(String, _)| *k != key);
                changes.push((key, fragment));
            }
            for (key, fragment) in &changes {
                match fragment {
                    Some(fragment) => live.insert(key.clone(), fragment.clone()),
                    None => live.remove(key),
                };
            }
            let offered: Vec<(String, String, Arc<Fragment>)> = live
                .iter()
                .map(|(key, f)| ("test".to_string(), key.clone(), f.clone()))
                .collect();
            match compilation.change("test", &changes) {
                Ok(()) => incremental += 1,
                Err(NeedsFullCompile) => {
                    fallbacks += 1;
                    compilation = Compilation::full(&settings, offered.clone());
                }
            }
            let reference: Vec<Offered> = offered
                .iter()
                .map(|(source, _, fragment)| Offered {
                    source: source.clone(),
                    fragment: fragment.clone(),
                })
                .collect();
            assert_eq!(
                outline(&compilation.compiled()),
                outline(&compile(&settings, &reference)),
                "step {step}: {:?}",
                changes
                    .iter()
                    .map(|(k, f)| (k, f.is_some()))
                    .collect::<Vec<_>>()
            );
        }
        assert!(
            incremental > 500 && fallbacks > 100,
            "{incremental} / {fallbacks}"
        );
    }

    #[test]
    fn a_change_that_frees_a_claim_for_a_rejected_fragment_needs_a_full_compile() {
        let settings = settings();
        let older = Arc::new(object("older", 1, "h", "/", false));
        let newer = Arc::new(object("newer", 2, "h", "/", false));
        let fragments = [("older", &older), ("newer", &newer)]
            .map(|(key, f)| ("test".to_string(), key.to_string(), f.clone()));
        let mut compilation = Compilation::full(&settings, fragments);
        assert_eq!(compilation.compiled().rejected.len(), 1);
        let elsewhere = Arc::new(object("older", 1, "h", "/elsewhere", false));
        assert_eq!(
            compilation.change("test", &[("older".into(), Some(elsewhere))]),
            Err(NeedsFullCompile)
        );
    }
}
