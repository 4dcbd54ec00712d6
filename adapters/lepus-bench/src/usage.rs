//! Resource use: this process's CPU time and context switches (`getrusage`), and the CPU time
//! of another process (the broker's Erlang VM) from `/proc`.

use std::time::Duration;

/// This process's CPU time (user + system) and context switches (voluntary + involuntary:
/// a thread that parks to wait, or is preempted) so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub switches: u64,
}

impl Usage {
    /// Now; zero when `getrusage` fails.
    pub fn now() -> Usage {
        use nix::sys::resource::{getrusage, UsageWho};
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(u) => {
                let tv = |t: nix::sys::time::TimeVal| {
                    Duration::from_secs(t.tv_sec().max(0) as u64)
                        + Duration::from_micros(t.tv_usec().max(0) as u64)
                };
                let count = |n: std::ffi::c_long| u64::try_from(n).unwrap_or(0);
                Usage {
                    cpu: tv(u.user_time()) + tv(u.system_time()),
                    switches: count(u.voluntary_context_switches())
                        + count(u.involuntary_context_switches()),
                }
            }
            Err(_) => Usage::default(),
        }
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// CPU time (user + system) of process `pid` (`self` for this one), from `/proc`.
pub fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture it runs here.
    Some(Duration::from_millis(ticks * 10))
}

/// The pid of the broker's Erlang VM, if it runs on this machine (the oldest `beam.smp`: the
/// default broker, not a test cluster's nodes started later).
pub fn broker_pid() -> Option<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "beam.smp"])
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!pid.is_empty()).then_some(pid)
}
