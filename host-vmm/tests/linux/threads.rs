//! Rust threads on the virtual server: std::thread (more than VPs), Mutex, Condvar, an
//! mpsc channel and thread-local storage; std::fs on a directory tree in /tmp written by
//! several threads (create_dir_all, metadata, read_dir, rename, remove_dir_all, which
//! works through descriptors of the directories). Everything printed is computed, so a
//! native run prints the same bytes.
use std::cell::Cell;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

thread_local! {
    static LOCAL: Cell<u64> = const { Cell::new(0) };
}

fn main() {
    let total = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..10u64)
        .map(|id| {
            let total = Arc::clone(&total);
            thread::spawn(move || {
                for i in 0..(id + 1) * 500 {
                    LOCAL.with(|l| l.set(l.get() + i % 11));
                }
                let mine = LOCAL.with(Cell::get);
                *total.lock().unwrap() += mine;
                mine
            })
        })
        .collect();
    let joined: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("joined {joined}, total {}", total.lock().unwrap());

    let (send, receive) = mpsc::channel();
    let senders: Vec<_> = (0..4u64)
        .map(|id| {
            let send = send.clone();
            thread::spawn(move || {
                for i in 0..250 {
                    send.send(id * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(send);
    let received: u64 = receive.iter().sum();
    for s in senders {
        s.join().unwrap();
    }
    println!("received {received}");

    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let other = {
        let pair = Arc::clone(&pair);
        thread::spawn(move || {
            let (turn, changed) = &*pair;
            for _ in 0..1000 {
                let mut t = changed.wait_while(turn.lock().unwrap(), |t| *t != 1).unwrap();
                *t = 0;
                changed.notify_all();
            }
        })
    };
    let (turn, changed) = &*pair;
    for _ in 0..1000 {
        let mut t = changed.wait_while(turn.lock().unwrap(), |t| *t != 0).unwrap();
        *t = 1;
        changed.notify_all();
    }
    other.join().unwrap();
    println!("alternated 1000 times, main local {}", LOCAL.with(Cell::get));

    // A tree in /tmp (its own name, so a native run beside others cannot collide).
    let top = std::path::PathBuf::from(format!("/tmp/cvmm-rs-tree-{}", std::process::id()));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let dir = top.join(format!("w{i}/deep"));
            thread::spawn(move || {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("data"), vec![b'a' + i as u8; 1000 * (i + 1)]).unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&top)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    std::fs::rename(top.join("w1"), top.join("moved")).unwrap();
    let moved = std::fs::metadata(top.join("moved/deep/data")).unwrap();
    println!(
        "tree {names:?}, moved data {} bytes, is dir {}",
        moved.len(),
        std::fs::metadata(top.join("moved/deep")).unwrap().is_dir()
    );
    std::fs::remove_dir_all(&top).unwrap();
    println!("removed: {}", !top.exists());
}
