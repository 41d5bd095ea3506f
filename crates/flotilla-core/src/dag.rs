//! Checks the dependencies of a batch of new tasks: every reference must resolve and the
//! references among the batch's own tasks must not form a cycle.
//!
//! Existing tasks cannot gain dependencies, so a cycle can only form inside one batch, through
//! `ref` names; checking the batch alone is enough.

use std::collections::HashMap;

use crate::error::CoreError;

/// Orders the tasks of a batch so that each comes after the batch tasks it depends on.
///
/// `edges[i]` lists the batch indexes task `i` depends on; `names[i]` is how errors name task
/// `i`. Returns a topological order, or an error naming one cycle.
pub fn topological_order(edges: &[Vec<usize>], names: &[String]) -> Result<Vec<usize>, CoreError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = edges.len();
    let mut mark = vec![Mark::New; n];
    let mut order = Vec::with_capacity(n);
    // Iterative depth-first search, so deep chains cannot overflow the stack.
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = edges[node].get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let start = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[start..]
                            .iter()
                            .map(|&(n, _)| names[n].as_str())
                            .collect();
                        cycle.push(names[dep].as_str());
                        return Err(CoreError::invalid(format!(
                            "dependency cycle: {}",
                            cycle.join(" -> ")
                        )));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Maps each `ref` name of a batch to its index, refusing duplicates.
pub fn index_refs<'a>(
    refs: impl Iterator<Item = (usize, Option<&'a str>)>,
) -> Result<HashMap<&'a str, usize>, CoreError> {
    let mut map = HashMap::new();
    for (i, r) in refs {
        if let Some(r) = r
            && map.insert(r, i).is_some()
        {
            return Err(CoreError::invalid(format!(
                "ref {r:?} is used by more than one task of the batch"
            )));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn orders_dependencies_first() {
        let edges = vec![vec![1, 2], vec![2], vec![]];
        let order = topological_order(&edges, &names(3)).unwrap();
        assert_eq!(order, vec![2, 1, 0]);
    }

    #[test]
    fn names_the_cycle() {
        let edges = vec![vec![1], vec![2], vec![0]];
        let err = topological_order(&edges, &names(3)).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: t0 -> t1 -> t2 -> t0");
        let self_loop = topological_order(&[vec![0]], &names(1)).unwrap_err();
        assert_eq!(self_loop.to_string(), "dependency cycle: t0 -> t0");
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let n = 200_000;
        let edges: Vec<Vec<usize>> = (0..n)
            .map(|i| if i + 1 < n { vec![i + 1] } else { vec![] })
            .collect();
        assert_eq!(topological_order(&edges, &names(n)).unwrap().len(), n);
    }

    proptest! {
        /// Edges that only point to lower indexes never form a cycle, and the order respects them.
        #[test]
        fn acyclic_graphs_get_a_valid_order(
            raw in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..4), 1..60)
        ) {
            let edges: Vec<Vec<usize>> = raw.iter().enumerate()
                .map(|(i, ds)| if i == 0 { vec![] } else { ds.iter().map(|d| d.index(i)).collect() })
                .collect();
            let order = topological_order(&edges, &names(edges.len())).unwrap();
            let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &n)| (n, p)).collect();
            prop_assert_eq!(order.len(), edges.len());
            for (i, ds) in edges.iter().enumerate() {
                for d in ds { prop_assert!(pos[d] < pos[&i]); }
            }
        }

        /// Adding an edge from the lowest to the highest node of a chain makes a cycle.
        #[test]
        fn closing_a_chain_is_a_cycle(n in 2usize..50) {
            let mut edges: Vec<Vec<usize>> = (0..n).map(|i| if i + 1 < n { vec![i + 1] } else { vec![] }).collect();
            edges[n - 1].push(0);
            prop_assert!(topological_order(&edges, &names(n)).is_err());
        }
    }
}
