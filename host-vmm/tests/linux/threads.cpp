// C++ threads on the virtual server: std::thread (more of them than VPs), std::mutex,
// std::condition_variable hand-overs between two threads, a producer/consumer queue,
// and thread_local. Everything printed is computed, so a native run prints the same.
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

static thread_local long local_count = 0;

int main() {
    std::mutex lock;
    std::condition_variable changed;
    std::vector<long> results(12);
    std::vector<std::thread> workers;
    for (int id = 0; id < 12; id++) {
        workers.emplace_back([id, &results] {
            for (int i = 0; i <= 1000 * (id + 1); i++) local_count += i % 7;
            results[id] = local_count;
        });
    }
    for (auto &t : workers) t.join();
    std::printf("sum of results %ld\n", std::accumulate(results.begin(), results.end(), 0L));

    // Producer/consumer through a queue guarded by a mutex and a condition variable.
    std::deque<int> queue;
    bool done = false;
    long consumed = 0;
    std::thread consumer([&] {
        std::unique_lock<std::mutex> guard(lock);
        for (;;) {
            changed.wait(guard, [&] { return !queue.empty() || done; });
            while (!queue.empty()) {
                consumed += queue.front();
                queue.pop_front();
            }
            if (done) break;
        }
    });
    for (int i = 1; i <= 2000; i++) {
        std::lock_guard<std::mutex> guard(lock);
        queue.push_back(i);
        changed.notify_one();
    }
    {
        std::lock_guard<std::mutex> guard(lock);
        done = true;
        changed.notify_one();
    }
    consumer.join();
    std::printf("consumed %ld\n", consumed);

    // Strict alternation: every hand-over crosses between the two threads.
    int turn = 0;
    long flips = 0;
    std::thread other([&] {
        for (int i = 0; i < 1000; i++) {
            std::unique_lock<std::mutex> guard(lock);
            changed.wait(guard, [&] { return turn == 1; });
            turn = 0;
            flips++;
            changed.notify_all();
        }
    });
    for (int i = 0; i < 1000; i++) {
        std::unique_lock<std::mutex> guard(lock);
        changed.wait(guard, [&] { return turn == 0; });
        turn = 1;
        flips++;
        changed.notify_all();
    }
    other.join();
    std::printf("flips %ld, main thread_local %ld\n", flips, local_count);
    return 0;
}
