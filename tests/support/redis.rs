//! A real `redis-server` for the tests that need one (installed by `.ci/run`).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a loopback port, killed on drop.
pub struct Redis {
    port: u16,
    child: Option<Child>,
    /// More `redis-server` options (they override the defaults).
    extra: Vec<String>,
    /// Where a persisting Redis writes its files.
    dir: Option<tempfile::TempDir>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With the append-only file on (`--appendonly yes`) in a directory of its own:
    /// a restart comes back with everything written before it.
    pub fn start_persisting() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        let mut redis = Self::start_with(&["--appendonly", "yes", "--dir", &path]);
        redis.dir = Some(dir);
        redis
    }

    /// With more `redis-server` options, which override the defaults.
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut redis = Self {
            port,
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir: None,
        };
        redis.restart();
        redis
    }

    /// Starts (again) on the same port; without persistence (the default) a
    /// restart comes back empty.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the cluster tests need it; install it with \
                     `apt-get install redis-server` (.ci/run does this)"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: connections drop at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
