//! A real broker started from a real `activemq.xml` in a tempdir, with hot reload on: the
//! tests edit the file and wait for the reload to finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferromq::broker::{self, BrokerHandle, Phase};
use ferromq::reload::ReloadStats;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::xml::{load_file, no_env};

/// Upper bound for one reload to be seen and applied.
pub const RELOAD_WAIT: Duration = Duration::from_secs(10);

pub struct LiveBroker {
    pub dir: tempfile::TempDir,
    pub handle: BrokerHandle,
    stats: watch::Receiver<ReloadStats>,
    phase: watch::Receiver<Phase>,
}

impl LiveBroker {
    /// Start from `xml` written to `activemq.xml`; files are watched when `watch`.
    pub async fn start(xml: &str, watch: bool) -> LiveBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("activemq.xml");
        std::fs::write(&file, xml).expect("write");
        let config = load_file(&file);
        let mut handle = broker::start(config.clone()).await.expect("broker starts");
        // Returns once the control task watches the files.
        handle.enable_reload(config, no_env(), watch).await;
        let stats = handle.reload().expect("reload on").subscribe();
        let mut phase = handle.phase();
        wait_phase(&mut phase, Phase::Running).await;
        LiveBroker {
            dir,
            handle,
            stats,
            phase,
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("activemq.xml")
    }

    pub fn stats(&self) -> ReloadStats {
        self.stats.borrow().clone()
    }

    /// Bound address of the connector `name` now.
    pub async fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.handle
            .current_listener_addrs()
            .await
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Write the file in place and wait until a reload has finished (ok or failed).
    pub async fn edit(&mut self, xml: &str) -> ReloadStats {
        let before = self.finished();
        std::fs::write(self.file(), xml).expect("write");
        self.wait_reload_after(before).await
    }

    /// Save the way many editors do (write a temporary file, rename it over the original).
    pub async fn edit_by_rename(&mut self, xml: &str) -> ReloadStats {
        let before = self.finished();
        let tmp = self.dir.path().join(".activemq.xml.swp");
        std::fs::write(&tmp, xml).expect("write tmp");
        std::fs::rename(&tmp, self.file()).expect("rename");
        self.wait_reload_after(before).await
    }

    /// Reloads finished so far.
    pub fn finished(&self) -> u64 {
        let s = self.stats.borrow();
        s.reloads_ok + s.reloads_failed
    }

    /// Wait until a reload has finished after `before` were, and the broker is `Running` again.
    pub async fn wait_reload_after(&mut self, before: u64) -> ReloadStats {
        let waited = tokio::time::timeout(
            RELOAD_WAIT,
            self.stats
                .wait_for(|s| s.reloads_ok + s.reloads_failed > before),
        )
        .await;
        let stats = waited
            .expect("the reload within the bounded wait")
            .expect("reloader alive")
            .clone();
        wait_phase(&mut self.phase, Phase::Running).await;
        stats
    }

    pub async fn shutdown(mut self) {
        tokio::time::timeout(Duration::from_secs(15), self.handle.shutdown())
            .await
            .expect("shutdown completes");
        wait_phase(&mut self.phase, Phase::Stopped).await;
    }
}

/// Wait (bounded) until the broker's phase is `wanted`.
pub async fn wait_phase(phase: &mut watch::Receiver<Phase>, wanted: Phase) {
    let reached = tokio::time::timeout(RELOAD_WAIT, phase.wait_for(|p| *p == wanted))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "the broker did not reach {wanted} (it is {})",
        *phase.borrow()
    );
}

/// Whether the peer closes `stream` within `within` (data read meanwhile is discarded).
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
