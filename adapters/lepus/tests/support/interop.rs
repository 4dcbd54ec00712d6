//! Shared pieces of the `interop` tests: the Python and PHP scripts in `tests/interop/`, the
//! checks for `pika` and `php-amqplib`, and script processes bounded in time.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The path of `tests/interop/<name>`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// True when `python3 -c "import pika"` works; otherwise skips loudly, or panics when the
/// broker is required (`CI=true` or `LEPUS_REQUIRE_BROKER=1`; `.ci/run` installs pika).
pub fn pika_available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if crate::amqp_support::broker_required() {
            panic!("{test}: python3 with pika is required (pip install pika)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n##########\n## SKIPPED {test}: python3 with pika not found (pip install pika)\n##########"
        );
    }
    ok
}

/// True when `php` can load php-amqplib (`require_once 'PhpAmqpLib/autoload.php'`, where
/// Debian's `php-amqplib` package puts it on the include path); otherwise skips loudly, or
/// panics when the broker is required (`CI=true` or `LEPUS_REQUIRE_BROKER=1`; `.ci/run`
/// installs `php-cli` and `php-amqplib`).
pub fn php_available(test: &str) -> bool {
    let ok = Command::new("php")
        .args([
            "-r",
            r"require_once 'PhpAmqpLib/autoload.php';
              exit(class_exists('PhpAmqpLib\Connection\AMQPStreamConnection') ? 0 : 1);",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if crate::amqp_support::broker_required() {
            panic!(
                "{test}: php with php-amqplib is required (apt-get install php-cli php-amqplib)"
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n##########\n## SKIPPED {test}: php with php-amqplib not found \
             (apt-get install php-cli php-amqplib)\n##########"
        );
    }
    ok
}

/// `AMQP_ADDR` (tests reaching this connected to it already).
pub fn amqp_url() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_default()
}

/// A running `python3 <script> <args>` or `php <script> <args>`: its stdout line by line, its
/// stderr at the end. Killed when dropped, so a failing test leaves no process behind.
pub struct Script {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

/// How a [`Script`] process ended.
pub struct Finished {
    /// Its exit status; `None` when it was killed.
    pub status: Option<ExitStatus>,
    /// Its stdout lines not read with [`Script::next_line`].
    pub lines: Vec<String>,
    /// All of its stderr.
    pub stderr: String,
}

impl Script {
    /// Starts `python3 tests/interop/<name> <args>`.
    pub fn python(name: &str, args: &[String]) -> Script {
        Script::spawn("python3", name, args)
    }

    /// Starts `php tests/interop/<name> <args>`.
    pub fn php(name: &str, args: &[String]) -> Script {
        Script::spawn("php", name, args)
    }

    fn spawn(interpreter: &str, name: &str, args: &[String]) -> Script {
        let mut child = Command::new(interpreter)
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{interpreter} starts: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Script {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line, waiting at most `timeout`; `None` at the end of stdout or on
    /// timeout.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the process to exit, killing it after `limit`.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let mut status = None;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        self.finish(status)
    }

    /// Kills the process and collects what it printed.
    pub fn kill(mut self) -> Finished {
        self.finish(None)
    }

    fn finish(&mut self, status: Option<ExitStatus>) -> Finished {
        if status.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // The reader thread ends with stdout; collect what it still holds.
        let lines = self.lines.iter().collect();
        Finished {
            status,
            lines,
            stderr,
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
