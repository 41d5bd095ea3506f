mod common;
use common::*;
use flotilla_core::*;
use flotilla_store::*;
#[test]
#[ignore]
fn scratch() {
    let _ = std::fs::remove_dir_all("/tmp/scratch");
    std::fs::create_dir_all("/tmp/scratch").unwrap();
    let mut store = SqliteStore::open(std::path::Path::new("/tmp/scratch/flotilla.db"), SyncMode::Full).unwrap();
    let s = swarm(1, "x");
    commit(&mut store, Changes { swarms: vec![s.clone()], ..Default::default() });
    let mut tasks = Vec::new();
    for i in 0..30000u128 {
        let mut t = queued(i, s.id, 1_700_000_000_000 + i as i64);
        t.id = TaskId(uuid::Uuid::now_v7());
        if i % 3 != 0 { t.state = TaskState::Completed { agent_id: agent_id(1), result: Json::null(), completed_at: ts(1_800_000_000_000 + i as i64) }; }
        tasks.push(t);
    }
    commit(&mut store, Changes { tasks, ..Default::default() });
}
