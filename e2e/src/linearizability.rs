//! A Wing-Gong-Lowe linearizability checker (the algorithm Porcupine implements), generic over a
//! sequential model.
//!
//! The history of one partition (one key: P-compositionality lets each key be checked alone) is
//! laid out as a time-ordered doubly linked list of call and return entries. The search takes the
//! first call it can apply to the model, removes that operation from the list and starts over;
//! reaching a return entry means the operation it closes should have been linearized by now, so
//! the search backtracks. A cache of (set of linearized operations, model state) prunes states
//! already explored (Lowe's memoization). An operation with an unknown outcome (the client timed
//! out) has its return at infinity: it may take effect at any point after its call, or never.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Instant;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;
    fn init() -> Self::State;
    /// The state after applying `input` in `state`, if `output` is what the model would answer.
    fn step(state: &Self::State, input: &Self::Input, output: &Self::Output)
        -> Option<Self::State>;
}

/// One operation of a history: call and return times on one monotonic clock.
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    pub input: I,
    pub output: O,
    pub call: u64,
    /// `None`: the outcome is unknown (it may take effect any time after `call`, or never).
    pub ret: Option<u64>,
}

/// The verdict on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable; the longest sequence of operation indices the search could linearize.
    Violation {
        longest_prefix: Vec<usize>,
    },
    /// The search ran past its deadline.
    Unknown,
}

const NONE: usize = usize::MAX;

struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: the operation index and whether it is the call.
    op: Vec<(usize, bool)>,
    /// For a call node, its return node.
    partner: Vec<usize>,
}

impl Entries {
    /// Node 0 is the head sentinel; nodes 1.. are the entries in time order.
    fn build<I, O>(ops: &[Operation<I, O>]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            events.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        // Calls before returns at equal times: touching operations count as concurrent, which
        // is the permissive (never falsely rejecting) choice.
        events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
        let n = events.len() + 1;
        let mut e = Entries {
            next: vec![NONE; n],
            prev: vec![NONE; n],
            op: vec![(NONE, false); n],
            partner: vec![NONE; n],
        };
        let mut call_node = vec![NONE; ops.len()];
        for (k, &(_, is_ret, i)) in events.iter().enumerate() {
            let node = k + 1;
            e.op[node] = (i, !is_ret);
            e.prev[node] = node - 1;
            e.next[node - 1] = node;
            if is_ret {
                e.partner[call_node[i]] = node;
            } else {
                call_node[i] = node;
            }
        }
        e
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NONE {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.partner[call]);
    }

    /// Undoes `lift`; lifts are undone in reverse order (the search's stack), as dancing links
    /// require.
    fn unlift(&mut self, call: usize) {
        self.relink(self.partner[call]);
        self.relink(call);
    }
}

/// Checks one partition's history against `M`, giving up at `deadline`.
pub fn check<M: Model>(
    ops: &[Operation<M::Input, M::Output>],
    deadline: Option<Instant>,
) -> Verdict {
    let mut entries = Entries::build(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut state = M::init();
    let mut node = entries.next[0];
    let mut steps: u64 = 0;
    while entries.next[0] != NONE {
        steps += 1;
        if steps % 4096 == 0 && deadline.is_some_and(|d| Instant::now() > d) {
            return Verdict::Unknown;
        }
        let (op_idx, is_call) = entries.op[node];
        if is_call {
            let op = &ops[op_idx];
            if let Some(next_state) = M::step(&state, &op.input, &op.output) {
                let mut with = linearized.clone();
                with[op_idx / 64] |= 1 << (op_idx % 64);
                if cache.insert((with.clone(), next_state.clone())) {
                    stack.push((node, std::mem::replace(&mut state, next_state)));
                    linearized = with;
                    entries.lift(node);
                    node = entries.next[0];
                    continue;
                }
            }
            node = entries.next[node];
        } else {
            // A return reached before its operation was linearized: backtrack.
            if stack.len() > longest.len() {
                longest = stack.iter().map(|(n, _)| entries.op[*n].0).collect();
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Verdict::Violation {
                    longest_prefix: longest,
                };
            };
            let idx = entries.op[call].0;
            linearized[idx / 64] &= !(1 << (idx % 64));
            state = prev_state;
            entries.unlift(call);
            node = entries.next[call];
        }
        // `node` can run off the end only after every return was passed, which the
        // backtracking above prevents while operations remain.
        if node == NONE {
            return Verdict::Violation {
                longest_prefix: longest,
            };
        }
    }
    Verdict::Linearizable
}

/// Shrinks a violating history: drops operations one at a time while the rest still violates,
/// so a failure report shows only what is needed to see it. Bounded by `deadline`.
pub fn minimize<M: Model>(ops: &[Operation<M::Input, M::Output>], deadline: Instant) -> Vec<usize>
where
    M::Input: Clone,
    M::Output: Clone,
{
    let mut keep: Vec<usize> = (0..ops.len()).collect();
    let mut i = 0;
    while i < keep.len() && Instant::now() < deadline {
        let candidate: Vec<usize> = keep
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, &k)| k)
            .collect();
        let sub: Vec<_> = candidate.iter().map(|&k| ops[k].clone()).collect();
        if matches!(check::<M>(&sub, Some(deadline)), Verdict::Violation { .. }) {
            keep = candidate;
        } else {
            i += 1;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register: write(v) / read() -> v, initial 0.
    struct Register;
    #[derive(Debug, Clone)]
    enum In {
        W(u32),
        R,
    }
    impl Model for Register {
        type State = u32;
        type Input = In;
        type Output = Option<u32>;
        fn init() -> u32 {
            0
        }
        fn step(s: &u32, i: &In, o: &Option<u32>) -> Option<u32> {
            match i {
                In::W(v) => Some(*v),
                In::R => match o {
                    Some(v) if v == s => Some(*s),
                    None => Some(*s),
                    _ => None,
                },
            }
        }
    }

    fn op(
        input: In,
        output: Option<u32>,
        call: u64,
        ret: Option<u64>,
    ) -> Operation<In, Option<u32>> {
        Operation {
            input,
            output,
            call,
            ret,
        }
    }

    fn verdict(ops: &[Operation<In, Option<u32>>]) -> Verdict {
        check::<Register>(ops, None)
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_write_and_reads_is_linearizable() {
        // Porcupine's README example: put(100) overlaps a read of 100 and an earlier read of 0.
        let h = [
            op(In::W(100), None, 0, Some(100)),
            op(In::R, Some(100), 25, Some(75)),
            op(In::R, Some(0), 30, Some(60)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_write_returned_is_rejected() {
        let h = [
            op(In::W(1), None, 0, Some(10)),
            op(In::R, Some(0), 20, Some(30)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn reads_going_back_in_time_are_rejected() {
        // Porcupine's non-linearizable example: a read sees 100, a later read sees 0 again.
        let h = [
            op(In::W(100), None, 0, Some(100)),
            op(In::R, Some(100), 5, Some(35)),
            op(In::R, Some(0), 40, Some(90)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let h = [op(In::R, Some(7), 0, Some(1))];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn order_of_two_sequential_writes_is_enforced() {
        let h = [
            op(In::W(1), None, 0, Some(1)),
            op(In::W(2), None, 2, Some(3)),
            op(In::R, Some(1), 4, Some(5)),
        ];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
        let ok = [
            op(In::W(1), None, 0, Some(3)),
            op(In::W(2), None, 1, Some(2)),
            op(In::R, Some(1), 4, Some(5)),
        ];
        assert_eq!(verdict(&ok), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_may_take_effect_late_or_never() {
        // The timed-out write is seen long after its call...
        let late = [
            op(In::W(5), None, 0, None),
            op(In::R, Some(0), 10, Some(11)),
            op(In::R, Some(5), 20, Some(21)),
        ];
        assert_eq!(verdict(&late), Verdict::Linearizable);
        // ...or never.
        let never = [
            op(In::W(5), None, 0, None),
            op(In::R, Some(0), 10, Some(11)),
        ];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        // But once seen it cannot be unseen.
        let flicker = [
            op(In::W(5), None, 0, None),
            op(In::R, Some(5), 10, Some(11)),
            op(In::R, Some(0), 20, Some(21)),
        ];
        assert!(matches!(verdict(&flicker), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_outcome_cannot_take_effect_before_its_call() {
        let h = [op(In::R, Some(5), 0, Some(1)), op(In::W(5), None, 2, None)];
        assert!(matches!(verdict(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn many_concurrent_operations_finish_quickly_thanks_to_the_cache() {
        // 40 concurrent writes of the same value and reads: without memoization this explodes.
        let mut h = Vec::new();
        for i in 0..40 {
            h.push(op(In::W(1), None, i, Some(1000 + i)));
        }
        for i in 0..20 {
            h.push(op(In::R, Some(1), 500 + i, Some(1500 + i)));
        }
        let start = Instant::now();
        assert_eq!(verdict(&h), Verdict::Linearizable);
        assert!(start.elapsed().as_secs() < 5);
    }

    #[test]
    fn minimize_keeps_only_the_contradiction() {
        let mut h = vec![
            op(In::W(1), None, 0, Some(10)),
            op(In::R, Some(0), 20, Some(30)),
        ];
        for i in 0..10 {
            h.push(op(In::W(9), None, 100 + i * 10, Some(105 + i * 10)));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let kept = minimize::<Register>(&h, deadline);
        assert_eq!(kept, vec![0, 1]);
    }
}
