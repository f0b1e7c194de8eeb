//! The standard `process_*` metrics (CPU, memory, file descriptors, start time), read from
//! `/proc/self` at each scrape, under the names Prometheus's client libraries use so that
//! existing dashboards and alerts work. `/metrics` is rendered off the async worker
//! threads, so these reads never block one.

// sysconf(3) and getrlimit(2), for clock ticks, the page size and the descriptor limit.
#![allow(unsafe_code)]

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::{proto, Counter, Gauge, IntGauge};

/// Reads `/proc/self` when collected.
pub struct ProcessCollector {
    cpu_seconds: Counter,
    resident_memory: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
}

/// What `/proc/self/stat` says.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    threads: i64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
    virtual_bytes: i64,
    resident_pages: i64,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let int = |name: &str, help: &str| {
            IntGauge::new(name, help).expect("metric names are static and valid")
        };
        Self {
            cpu_seconds: Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("metric names are static and valid"),
            resident_memory: int(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: int(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: int("process_open_fds", "Number of open file descriptors."),
            max_fds: int(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            start_time: Gauge::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .expect("metric names are static and valid"),
            threads: int("process_threads", "Number of OS threads in the process."),
        }
    }

    fn parts(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu_seconds,
            &self.resident_memory,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.start_time,
            &self.threads,
        ]
    }

    /// Reads `/proc/self` into the metrics; what cannot be read keeps its last value.
    fn refresh(&self) {
        // SAFETY: sysconf and getrlimit only read process-wide values into what is passed.
        let (ticks_per_second, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK).max(1),
                libc::sysconf(libc::_SC_PAGESIZE).max(1),
            )
        };
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text))
        {
            let seconds = stat.cpu_ticks as f64 / ticks_per_second as f64;
            let past = self.cpu_seconds.get();
            if seconds > past {
                self.cpu_seconds.inc_by(seconds - past);
            }
            self.threads.set(stat.threads);
            self.virtual_memory.set(stat.virtual_bytes);
            self.resident_memory.set(stat.resident_pages * page_size);
            if let Some(boot) = boot_time() {
                let started = boot + stat.start_ticks as f64 / ticks_per_second as f64;
                self.start_time.set(started);
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `limit`, which lives across the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds
                .set(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX));
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        self.refresh();
        self.parts().into_iter().flat_map(|c| c.collect()).collect()
    }
}

/// The fields of `/proc/self/stat` (proc(5)) sluice reports. The command name, in
/// parentheses, may hold spaces and parentheses itself: fields are counted after the last
/// `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3, so field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        threads: i64::try_from(field(20)?).ok()?,
        start_ticks: field(22)?,
        virtual_bytes: i64::try_from(field(23)?).ok()?,
        resident_pages: i64::try_from(field(24)?).ok()?,
    })
}

/// When the machine booted, in seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    120 30 0 0 20 0 9 0 5000 104857600 2560 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 150,
                threads: 9,
                start_ticks: 5000,
                virtual_bytes: 104_857_600,
                resident_pages: 2560,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let collector = ProcessCollector::new();
        let families = collector.collect();
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map(|f| &f.get_metric()[0])
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert!(value("process_resident_memory_bytes").get_gauge().value() > 0.0);
        assert!(value("process_open_fds").get_gauge().value() >= 3.0);
        assert!(value("process_start_time_seconds").get_gauge().value() > 1.0e9);
        assert!(value("process_threads").get_gauge().value() >= 1.0);
    }
}
