//! Cluster nodes for the tests that run several real `tally serve` processes on one Postgres:
//! starting a node under a shared secret and asking the cluster who owns the shards.

use std::time::{Duration, Instant};

use crate::server::{Client, TallyServer};

/// The environment that makes a server the cluster node `id`.
pub fn node_env(id: &str, secret: &str, lease_secs: u64) -> Vec<(&'static str, String)> {
    vec![
        ("TALLY_NODE_ID", id.to_owned()),
        ("TALLY_CLUSTER_SECRET", secret.to_owned()),
        ("TALLY_LEASE_SECS", lease_secs.to_string()),
    ]
}

/// Starts the cluster node `id` on `database`.
pub async fn start_node(database: &str, id: &str, secret: &str, lease_secs: u64) -> TallyServer {
    let env = node_env(id, secret, lease_secs);
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    TallyServer::start(database, &env).await
}

/// `GET /v1/admin/cluster` through the first node of `bases` that answers it within a second
/// (a node forwarding to a paused owner waits for it).
pub async fn cluster_view(admin: &Client, bases: &[String]) -> Option<serde_json::Value> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("client");
    for base in bases {
        let client = Client { base: base.clone(), http: http.clone(), ..admin.clone() };
        if let Ok((200, view)) = client.send(reqwest::Method::GET, "/v1/admin/cluster", None, None).await {
            return Some(view);
        }
    }
    None
}

/// Waits until a node other than those in `not` owns every shard; returns it.
pub async fn wait_for_owner(admin: &Client, bases: &[String], not: &[&str]) -> String {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(view) = cluster_view(admin, bases).await {
            let owners: Vec<&str> =
                view["shards"].as_array().unwrap().iter().filter_map(|shard| shard["owner"].as_str()).collect();
            let node = view["node_id"].as_str().unwrap_or_default();
            if owners.iter().all(|owner| *owner == node) && !not.contains(&node) && !owners.is_empty() {
                return node.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new owner (not {not:?}) within 30 s");
}
