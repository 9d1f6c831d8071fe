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

use crate::netns::Slowness;
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
    /// Isolate a random member: both ways with network namespaces, else one-sided (its peer
    /// proxy blackholes what the others send it).
    Partition,
    /// The same, aimed at the leader.
    PartitionLeader,
    /// Split the members into a random minority and majority (5 members: 2|3); namespaces
    /// only (one-sided with proxies: the minority's proxies blackhole).
    PartitionHalves,
    /// Degrade one member's peer link both ways (netem delay, jitter and loss; a slow token
    /// bucket where the kernel has no netem); namespaces only.
    SlowNet,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Kill,
        Fault::KillLeader,
        Fault::Pause,
        Fault::PauseLeader,
        Fault::MoveLeader,
        Fault::Member,
        Fault::Partition,
        Fault::PartitionLeader,
        Fault::PartitionHalves,
        Fault::SlowNet,
    ];

    /// Faults on the network: the run needs namespaces (or, failing that, peer proxies).
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::Partition | Fault::PartitionLeader | Fault::PartitionHalves | Fault::SlowNet
        )
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
            "partition-halves" => Fault::PartitionHalves,
            "slow-net" => Fault::SlowNet,
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
    if let Some(net) = &c.net {
        if let Err(e) = net.heal() {
            eprintln!("nemesis: healing the network: {e}");
        }
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
        Fault::Partition | Fault::PartitionLeader | Fault::PartitionHalves => {
            let side: Vec<usize> = match fault {
                Fault::Partition => vec![rng.gen_range(0..n)],
                Fault::PartitionLeader => match leader_index(cluster).await {
                    Some((i, _)) => vec![i],
                    None => return (String::new(), "no leader to aim at".into()),
                },
                _ => minority(rng, n),
            };
            let (names, note) = {
                let c = cluster.lock().await;
                let names = side
                    .iter()
                    .map(|&i| c.members[i].name.clone())
                    .collect::<Vec<_>>()
                    .join("+");
                let note = cut(&c, &side);
                (names, note)
            };
            tokio::time::sleep(hold).await;
            heal(cluster).await;
            (names, note)
        }
        Fault::SlowNet => {
            let target = rng.gen_range(0..n);
            let (name, note) = {
                let c = cluster.lock().await;
                let note = match &c.net {
                    Some(net) => match net.slow(target) {
                        Ok(Slowness::Netem) => "netem delay 80ms±40ms, 3% loss".to_string(),
                        Ok(Slowness::TokenBucket) => {
                            "tbf 256kbit, 150ms queue (no netem in this kernel)".to_string()
                        }
                        Err(e) => format!("not slowed: {e}"),
                    },
                    None => "skipped: needs network namespaces".to_string(),
                };
                (c.members[target].name.clone(), note)
            };
            tokio::time::sleep(hold).await;
            heal(cluster).await;
            (name, note)
        }
    }
}

/// A random minority of `n` members (at least one): with 5 members, 2 of them.
fn minority(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let size = ((n.saturating_sub(1)) / 2).max(1);
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    all.truncate(size);
    all.sort_unstable();
    all
}

/// Cuts `side` off from the other members: two ways with namespaces, else by blackholing the
/// side's peer proxies (one-sided). Returns the fault's note.
fn cut(c: &Cluster, side: &[usize]) -> String {
    if let Some(net) = &c.net {
        return match net.partition(side) {
            Ok(()) => "two-way (netns)".to_string(),
            Err(e) => format!("not cut: {e}"),
        };
    }
    let mut blocked = 0;
    for &i in side {
        if let Some(Some(p)) = c.proxies.get(i) {
            p.block();
            blocked += 1;
        }
    }
    if blocked == side.len() {
        "one-sided (proxy)".to_string()
    } else {
        format!("one-sided (proxy), {blocked} of {} cut", side.len())
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
    let (name, new_port, peer_host) = {
        let mut c = cluster.lock().await;
        let new_port = c.fresh_peer_port(victim);
        let m = &mut c.members[victim];
        m.kill9();
        let _ = std::fs::remove_dir_all(&m.data_dir);
        (m.name.clone(), new_port, m.peer_host.clone())
    };
    let Ok(new_port) = new_port else {
        return (name, "no free port".into());
    };
    // Same host (its namespace's peer address), new port: a new identity.
    let peer_url = format!("http://{peer_host}:{new_port}");
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
