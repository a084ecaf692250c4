//! Sessions against the real `tally serve` binary: a session outlives a SIGKILL and restart
//! (it is stored, and activated from the store on first use), an ended one stays ended, and
//! `TALLY_SESSION_IDLE_SECS` sets the idle expiry.

// Test code: a failed unwrap or panic is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tally_tests::server::{ADMIN_EMAIL, ADMIN_PASSWORD, Client, TallyServer};

fn sqlite_url() -> (String, std::path::PathBuf) {
    let file = std::env::temp_dir().join(format!("tally-sessions-{}.db", uuid::Uuid::new_v4().simple()));
    (format!("sqlite://{}", file.display()), file)
}

fn remove(file: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_kill_and_restart_and_an_ended_one_stays_ended() {
    let (url, file) = sqlite_url();
    let mut server = TallyServer::start(&url, &[]).await;
    let kept = Client::admin(&server).await;
    let ended = Client::login(&server.base_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(kept.get("/v1/users/me").await.0, 200);
    assert_eq!(ended.post("/v1/auth/logout", serde_json::json!({})).await.0, 204);
    assert_eq!(ended.get("/v1/users/me").await.0, 401);

    server.restart().await;
    assert_eq!(kept.get("/v1/users/me").await.0, 200, "a stored session is activated on first use");
    assert_eq!(ended.get("/v1/users/me").await.0, 401, "a restart does not revive an ended session");
    let (status, sessions) = kept.get("/v1/users/me/sessions").await;
    assert_eq!(status, 200);
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["client_ip"], "127.0.0.1", "recorded from the login's socket");
    drop(server);
    remove(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tally_serve_ends_sessions_idle_longer_than_tally_session_idle_secs() {
    let (url, file) = sqlite_url();
    let server = TallyServer::start(&url, &[("TALLY_SESSION_IDLE_SECS", "2")]).await;
    let admin = Client::admin(&server).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(admin.get("/v1/users/me").await.0, 200, "activity keeps it alive");
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(admin.get("/v1/users/me").await.0, 401, "idle for longer than 2 s");
    drop(server);
    remove(&file);
}
