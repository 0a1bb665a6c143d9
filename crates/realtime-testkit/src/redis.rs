//! [`RedisProcess`]: a `redis-server` of the test's own, on a free port, without persistence,
//! killed when dropped. Tests never touch a shared Redis (the one on 6379 may be anyone's),
//! and a test can kill its own server to inject a failure.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::WAIT;

/// A running `redis-server`, killed (and reaped) on drop.
#[derive(Debug)]
pub struct RedisProcess {
    child: Child,
    port: u16,
    /// Where `SAVE` writes and a start loads `dump.rdb` (none: the server's own directory,
    /// never loaded).
    dir: Option<PathBuf>,
}

impl RedisProcess {
    /// Starts `redis-server --port <free> --save "" --appendonly no` on 127.0.0.1 and waits
    /// (at most [`WAIT`]) until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed (with a message saying how to get it), cannot be
    /// started (five tries), or does not answer in time.
    pub fn start() -> RedisProcess {
        // The port was free when the kernel picked it; another process may take it before
        // redis-server binds it, so a server that exits at start is tried again elsewhere.
        RedisProcess::start_with(None)
    }

    /// As [`start`](Self::start), with `dir` as the server's directory: `SAVE` writes
    /// `dump.rdb` there and [`restart`](Self::restart) loads it (a snapshot restored).
    pub fn start_in(dir: &Path) -> RedisProcess {
        RedisProcess::start_with(Some(dir.to_path_buf()))
    }

    fn start_with(dir: Option<PathBuf>) -> RedisProcess {
        for _ in 0..5 {
            if let Some(process) = RedisProcess::try_start(free_port(), dir.clone()) {
                return process;
            }
        }
        panic!("redis-server exited at start five times (ports taken?)");
    }

    /// Starts a server on `port`; `None` when it exits before it answers.
    fn try_start(port: u16, dir: Option<PathBuf>) -> Option<RedisProcess> {
        let child = spawn(port, dir.as_deref());
        let mut process = RedisProcess { child, port, dir };
        process.wait_ready().then_some(process)
    }

    /// Kills the server with SIGKILL (no shutdown, no save) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server if it runs and starts it again on the same port (and directory:
    /// with one, the last `SAVE` is loaded); waits until it answers.
    ///
    /// # Panics
    /// When it does not answer in time.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + WAIT;
        loop {
            self.child = spawn(self.port, self.dir.as_deref());
            if self.wait_ready() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `-ERR ...`).
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("redis on {}: {e}", self.port));
        let _ = stream.set_read_timeout(Some(WAIT));
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("redis write: {e}"));
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap_or_else(|e| panic!("redis read: {e}"));
        line.trim_end().to_owned()
    }
}

/// `redis-server` on `port` without automatic saves or an append-only file.
fn spawn(port: u16, dir: Option<&Path>) -> Child {
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]).args([
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]);
    if let Some(dir) = dir {
        command.arg("--dir").arg(dir).args(["--dbfilename", "dump.rdb"]);
    }
    let spawned = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed: these tests start their own Redis 7 \
                 (`apt-get install redis-server`; CI's .ci/run installs it)"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

impl RedisProcess {
    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Waits (at most [`WAIT`]) until the server answers; false when it exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.ping() {
                return true;
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("+PONG")
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the kernel's pick for 127.0.0.1:0).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port()
}
