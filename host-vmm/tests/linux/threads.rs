//! Rust threads on the virtual server: std::thread (more than VPs), Mutex, Condvar, an
//! mpsc channel and thread-local storage. Everything printed is computed, so a native
//! run prints the same bytes.
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
}
