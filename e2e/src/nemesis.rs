//! The nemesis: one fault at a time, held for a random while, then healed, so a quorum always
//! comes back (what is checked is that no fault breaks safety, and that the cluster recovers).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::procs::{self, Cluster};
use crate::workload::{connect, Shared};

/// The faults the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 a random member, restart it later.
    Kill,
    /// kill -9 the leader.
    KillLeader,
    /// SIGSTOP a random member, SIGCONT later.
    Pause,
    /// SIGSTOP the leader.
    PauseLeader,
    /// MoveLeader to a random follower.
    MoveLeader,
    /// Remove a follower, wipe it, add it back as a learner with a new identity, promote it.
    Member,
    /// Cut a random member off from what the others send it (its peer proxy blackholes).
    Partition,
    /// The same, aimed at the leader.
    PartitionLeader,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::MoveLeader,
        Fault::Member,
        Fault::Partition,
        Fault::PartitionLeader,
    ];

    pub fn needs_proxies(self) -> bool {
        matches!(self, Fault::Partition | Fault::PartitionLeader)
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "kill" => Fault::Kill,
            "kill-leader" => Fault::KillLeader,
            "pause" => Fault::Pause,
            "pause-leader" => Fault::PauseLeader,
            "move-leader" => Fault::MoveLeader,
            "member" => Fault::Member,
            "partition" => Fault::Partition,
            "partition-leader" => Fault::PartitionLeader,
            other => return Err(format!("unknown nemesis {other:?}")),
        })
    }
}

/// Parses `kill,pause,...`, `all` or `none`.
pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
    match s {
        "all" => Ok(Fault::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        _ => s.split(',').map(|f| f.trim().parse()).collect(),
    }
}

/// One injected fault, for the report and the post-mortem file.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub target: String,
    /// Nanoseconds since the run started.
    pub start: u64,
    pub healed: u64,
    pub note: String,
}

/// Injects faults until `shared.stop`, then heals everything.
pub async fn run_nemesis(
    seed: u64,
    faults: Vec<Fault>,
    cluster: Arc<Mutex<Cluster>>,
    shared: Arc<Shared>,
) -> Vec<FaultRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    while !shared.stopped() && !faults.is_empty() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        if shared.stopped() {
            break;
        }
        let Some(&fault) = faults.choose(&mut rng) else {
            break;
        };
        let hold = Duration::from_millis(rng.gen_range(500..3000));
        let start = shared.now();
        let (target, note) = inject(fault, hold, &mut rng, &cluster, &shared).await;
        log.push(FaultRecord {
            fault,
            target,
            start,
            healed: shared.now(),
            note,
        });
    }
    heal(&cluster).await;
    log
}

/// Heals partitions, resumes paused members and starts stopped ones.
pub async fn heal(cluster: &Mutex<Cluster>) {
    let mut c = cluster.lock().await;
    for p in c.proxies.iter().flatten() {
        p.unblock();
    }
    for m in &mut c.members {
        m.resume();
        if !m.is_running() {
            if let Err(e) = m.start() {
                eprintln!("nemesis: restarting {}: {e}", m.name);
            }
        }
    }
}

async fn leader_index(cluster: &Mutex<Cluster>) -> Option<(usize, u64)> {
    let eps = cluster.lock().await.live_endpoints();
    let (ep, id) = procs::wait_leader(&eps, Duration::from_secs(10)).await?;
    let c = cluster.lock().await;
    c.members
        .iter()
        .position(|m| m.endpoint() == ep)
        .map(|i| (i, id))
}

async fn inject(
    fault: Fault,
    hold: Duration,
    rng: &mut StdRng,
    cluster: &Mutex<Cluster>,
    shared: &Shared,
) -> (String, String) {
    let n = cluster.lock().await.members.len();
    match fault {
        Fault::Kill | Fault::KillLeader | Fault::Pause | Fault::PauseLeader => {
            let target = if matches!(fault, Fault::Kill | Fault::Pause) {
                rng.gen_range(0..n)
            } else {
                match leader_index(cluster).await {
                    Some((i, _)) => i,
                    None => return (String::new(), "no leader to aim at".into()),
                }
            };
            let name = {
                let mut c = cluster.lock().await;
                let m = &mut c.members[target];
                if matches!(fault, Fault::Kill | Fault::KillLeader) {
                    m.kill9();
                } else {
                    m.pause();
                }
                m.name.clone()
            };
            tokio::time::sleep(hold).await;
            heal(cluster).await;
            (name, String::new())
        }
        Fault::MoveLeader => {
            let Some((li, _)) = leader_index(cluster).await else {
                return (String::new(), "no leader".into());
            };
            let eps = cluster.lock().await.all_endpoints();
            let others: Vec<usize> = (0..n).filter(|&i| i != li).collect();
            let Some(&to) = others.choose(rng) else {
                return (String::new(), "single member".into());
            };
            let Some((to_id, _, _, _)) = procs::status(&eps[to]).await else {
                return (eps[to].clone(), "target unreachable".into());
            };
            let note = match connect(&eps[li]).await {
                Some(c) => match tokio::time::timeout(
                    Duration::from_secs(10),
                    c.maintenance()
                        .move_leader(MoveLeaderRequest { target_id: to_id }),
                )
                .await
                {
                    Ok(Ok(_)) => "moved".to_string(),
                    Ok(Err(e)) => format!("refused: {}", e.message()),
                    Err(_) => "timed out".into(),
                },
                None => "leader unreachable".into(),
            };
            (eps[to].clone(), note)
        }
        Fault::Member => replace_member(rng, cluster, shared).await,
        Fault::Partition | Fault::PartitionLeader => {
            let target = if fault == Fault::Partition {
                rng.gen_range(0..n)
            } else {
                match leader_index(cluster).await {
                    Some((i, _)) => i,
                    None => return (String::new(), "no leader to aim at".into()),
                }
            };
            let name = {
                let c = cluster.lock().await;
                match c.proxies.get(target) {
                    Some(Some(p)) => p.block(),
                    _ => return (c.members[target].name.clone(), "no peer proxy".into()),
                }
                c.members[target].name.clone()
            };
            tokio::time::sleep(hold).await;
            heal(cluster).await;
            (name, String::new())
        }
    }
}

/// Removes a follower and brings it back as a new member (new data dir, new id): learner first,
/// promoted once it caught up.
async fn replace_member(
    rng: &mut StdRng,
    cluster: &Mutex<Cluster>,
    shared: &Shared,
) -> (String, String) {
    let Some((li, _)) = leader_index(cluster).await else {
        return (String::new(), "no leader".into());
    };
    let (leader_ep, victim, victim_ep) = {
        let c = cluster.lock().await;
        let followers: Vec<usize> = (0..c.members.len()).filter(|&i| i != li).collect();
        let Some(&v) = followers.choose(rng) else {
            return (String::new(), "single member".into());
        };
        (c.members[li].endpoint(), v, c.members[v].endpoint())
    };
    let Some(client) = connect(&leader_ep).await else {
        return (String::new(), "leader unreachable".into());
    };
    let Some((victim_id, _, _, _)) = procs::status(&victim_ep).await else {
        return (victim_ep, "victim unreachable".into());
    };
    if let Err(e) = client
        .cluster()
        .member_remove(MemberRemoveRequest { id: victim_id })
        .await
    {
        return (victim_ep, format!("remove refused: {}", e.message()));
    }
    // Clients stop using it; the removed member stops itself, kill it anyway.
    let (name, new_port) = {
        let mut c = cluster.lock().await;
        let m = &mut c.members[victim];
        m.kill9();
        let _ = std::fs::remove_dir_all(&m.data_dir);
        (m.name.clone(), procs::free_port())
    };
    let Ok(new_port) = new_port else {
        return (name, "no free port".into());
    };
    let peer_url = format!("http://127.0.0.1:{new_port}");
    let added = match client
        .cluster()
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            is_learner: true,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return (name, format!("re-add refused: {}", e.message())),
    };
    let Some(new_id) = added.member.as_ref().map(|m| m.id) else {
        return (name, "member add answered no member".into());
    };
    let initial_cluster = added
        .members
        .iter()
        .map(|m| {
            let n = if m.id == new_id {
                name.as_str()
            } else {
                m.name.as_str()
            };
            format!("{n}={}", m.peer_ur_ls.first().cloned().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(",");
    {
        let mut c = cluster.lock().await;
        let m = &mut c.members[victim];
        m.peer_port = new_port;
        m.listen_peer_port = new_port;
        m.initial_cluster = initial_cluster;
        m.cluster_state = "existing";
        if let Err(e) = m.start() {
            return (name, format!("restart failed: {e}"));
        }
        // It now listens where it advertises: no proxy in front of it any more.
        c.proxies[victim] = None;
        if let Ok(mut eps) = shared.endpoints.lock() {
            *eps = c.all_endpoints();
        }
    }
    // Promote once caught up (the leader refuses before); give it a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client
            .cluster()
            .member_promote(MemberPromoteRequest { id: new_id })
            .await
        {
            Ok(_) => return (name, "replaced and promoted".into()),
            Err(e) => last = e.message().to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let listed = client
        .cluster()
        .member_list(MemberListRequest::default())
        .await
        .map(|r| r.into_inner().members.len())
        .unwrap_or(0);
    (
        name,
        format!("not promoted after 30s ({listed} members): {last}"),
    )
}
