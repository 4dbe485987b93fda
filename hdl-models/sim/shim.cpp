// shim.cpp: the thin C ABI between Rust (hdl_models::rtl) and the Verilator model of
// cv_top. It owns one VerilatedContext and one model per simulated node, drives the
// clock, feeds frames beat by beat and fault descriptors, and records every action the
// pipeline emits with the cycle it left. Nothing protocol-specific lives here: the Rust
// side decides what to push and how to read the actions.
#include <cstdint>
#include <cstring>
#include <deque>

#include "Vcv_top.h"
#include "verilated.h"

extern "C" {

// Mirrors hdl_models::rtl::ffi::CvConfig.
struct CvConfig {
    uint32_t node;
    uint32_t node_count;
    uint32_t vs_id;
    uint32_t nreq;
    uint32_t npend;
    uint32_t map_vector;
    uint64_t page_base;
    uint64_t window_base;
};

// Mirrors hdl_models::rtl::ffi::CvAction.
struct CvAction {
    uint32_t kind;
    uint32_t err;
    uint32_t state;
    uint32_t data;
    uint32_t vp;
    uint32_t dmav;
    uint32_t dmaw;
    uint32_t dlen;
    uint32_t txv;
    uint32_t irqv;
    uint32_t vec;
    uint32_t reserved;
    uint64_t page;
    uint64_t daddr;
    uint64_t header[4];
    uint64_t body;
    uint64_t cycle;
};

// Mirrors hdl_models::rtl::ffi::CvStatus.
struct CvStatus {
    uint64_t cycles;
    uint64_t busy_cycles;
    uint32_t idle;
    uint32_t any_pending;
    uint32_t any_record;
    uint32_t reserved;
};

// Mirrors hdl_models::rtl::ffi::CvParams.
struct CvParams {
    uint32_t npages;
    uint32_t nreq;
    uint32_t npend;
    uint32_t nvec;
};
}

struct CvSim {
    VerilatedContext* ctx;
    Vcv_top* top;
    uint64_t cycle;
    std::deque<CvAction> actions;
    uint64_t ends;  // A_END records captured and not yet popped
};

static void capture(CvSim* s) {
    Vcv_top* t = s->top;
    if (!(t->out_valid && t->out_ready)) return;
    CvAction a;
    std::memset(&a, 0, sizeof a);
    a.kind = t->out_kind;
    a.err = t->out_err;
    a.state = t->out_state;
    a.data = t->out_data;
    a.vp = t->out_vp;
    a.dmav = t->out_dmav;
    a.dmaw = t->out_dmaw;
    a.dlen = t->out_dlen;
    a.txv = t->out_txv;
    a.irqv = t->out_irqv;
    a.vec = t->out_vec;
    a.page = t->out_page;
    a.daddr = t->out_daddr;
    a.header[0] = t->out_h0;
    a.header[1] = t->out_h1;
    a.header[2] = t->out_h2;
    a.header[3] = t->out_h3;
    a.body = t->out_body;
    a.cycle = s->cycle;
    if (a.kind == 0) s->ends++;
    s->actions.push_back(a);
}

// One clock cycle: inputs are already set; handshakes seen now complete on this edge.
static void tick(CvSim* s) {
    Vcv_top* t = s->top;
    t->eval();
    capture(s);
    t->clk = 1;
    t->eval();
    t->clk = 0;
    t->eval();
    s->cycle++;
}

extern "C" {

CvSim* cv_sim_new(const CvConfig* cfg) {
    CvSim* s = new CvSim;
    s->ctx = new VerilatedContext;
    s->top = new Vcv_top{s->ctx};
    s->cycle = 0;
    s->ends = 0;
    Vcv_top* t = s->top;
    t->clk = 0;
    t->cfg_node = cfg->node;
    t->cfg_node_count = cfg->node_count;
    t->cfg_vs_id = cfg->vs_id;
    t->cfg_page_base = cfg->page_base;
    t->cfg_window_base = cfg->window_base;
    t->cfg_nreq = cfg->nreq;
    t->cfg_npend = cfg->npend;
    t->cfg_map_vector = cfg->map_vector;
    t->out_ready = 1;
    t->rst = 1;
    for (int i = 0; i < 4; i++) tick(s);
    t->rst = 0;
    tick(s);
    return s;
}

void cv_sim_free(CvSim* s) {
    if (!s) return;
    s->top->final();
    delete s->top;
    delete s->ctx;
    delete s;
}

// The sizes build.rs gave the Verilog (-G) and this file (-D).
void cv_sim_params(CvParams* p) {
    p->npages = CV_NPAGES;
    p->nreq = CV_NREQ;
    p->npend = CV_NPEND;
    p->nvec = CV_NVEC;
}

void cv_sim_clock(CvSim* s, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) tick(s);
}

void cv_sim_set_home(CvSim* s, uint32_t idx, uint32_t node, uint32_t valid) {
    Vcv_top* t = s->top;
    t->home_we = 1;
    t->home_widx = idx;
    t->home_wnode = node;
    t->home_wvalid = valid ? 1 : 0;
    tick(s);
    t->home_we = 0;
}

void cv_sim_steer_write(CvSim* s, uint32_t vec, uint32_t vp, uint32_t valid) {
    Vcv_top* t = s->top;
    t->st_we = 1;
    t->st_vec = vec;
    t->st_vp = vp;
    t->st_valid = valid ? 1 : 0;
    tick(s);
    t->st_we = 0;
}

// Starts a VP removal and clocks until the table is rewritten; returns the cycles taken.
uint64_t cv_sim_steer_remove(CvSim* s, uint32_t vp, uint32_t to) {
    Vcv_top* t = s->top;
    uint64_t start = s->cycle;
    t->rm_vp = vp;
    t->rm_to = to;
    t->rm_valid = 1;
    do {
        t->eval();
        bool taken = t->rm_ready;
        tick(s);
        if (taken) break;
    } while (true);
    t->rm_valid = 0;
    t->eval();
    while (!t->rm_ready) {
        tick(s);
        t->eval();
    }
    return s->cycle - start;
}

// Feeds one frame (header and body) as 32-byte beats. Returns the cycle the first beat
// was taken.
uint64_t cv_sim_push_message(CvSim* s, const uint8_t* bytes, size_t len) {
    Vcv_top* t = s->top;
    size_t beats = len == 0 ? 1 : (len + 31) / 32;
    uint64_t first = 0;
    for (size_t b = 0; b < beats; b++) {
        uint8_t beat[32];
        std::memset(beat, 0, sizeof beat);
        size_t at = b * 32;
        size_t n = len > at ? (len - at < 32 ? len - at : 32) : 0;
        if (n) std::memcpy(beat, bytes + at, n);
        for (int w = 0; w < 8; w++) {
            uint32_t word = (uint32_t)beat[4 * w] | ((uint32_t)beat[4 * w + 1] << 8)
                            | ((uint32_t)beat[4 * w + 2] << 16) | ((uint32_t)beat[4 * w + 3] << 24);
            t->rx_data[w] = word;
        }
        t->rx_last = (b + 1 == beats) ? 1 : 0;
        t->rx_len = (uint16_t)(len > 0xffff ? 0xffff : len);
        t->rx_valid = 1;
        while (true) {
            t->eval();
            bool taken = t->rx_ready;
            uint64_t now = s->cycle;
            tick(s);
            if (taken) {
                if (b == 0) first = now;
                break;
            }
        }
    }
    t->rx_valid = 0;
    t->rx_last = 0;
    return first;
}

// Feeds one fault descriptor. Returns the cycle it was taken.
uint64_t cv_sim_push_fault(CvSim* s, uint64_t page, uint32_t write, uint32_t vp) {
    Vcv_top* t = s->top;
    t->f_page = page;
    t->f_write = write ? 1 : 0;
    t->f_vp = vp;
    t->f_valid = 1;
    uint64_t taken_at = 0;
    while (true) {
        t->eval();
        bool taken = t->f_ready;
        uint64_t now = s->cycle;
        tick(s);
        if (taken) {
            taken_at = now;
            break;
        }
    }
    t->f_valid = 0;
    return taken_at;
}

// Clocks until an A_END record has left the pipeline. 1: done; 0: max_cycles passed.
int cv_sim_run_to_end(CvSim* s, uint64_t max_cycles) {
    for (uint64_t i = 0; i < max_cycles; i++) {
        if (s->ends > 0) return 1;
        tick(s);
    }
    return s->ends > 0 ? 1 : 0;
}

// Pops the oldest captured action into *out. 1: popped; 0: none.
int cv_sim_pop_action(CvSim* s, CvAction* out) {
    if (s->actions.empty()) return 0;
    *out = s->actions.front();
    s->actions.pop_front();
    if (out->kind == 0 && s->ends > 0) s->ends--;
    return 1;
}

// Reads the directory entry, local state and home of page index idx (RAM port B).
void cv_sim_read_page(CvSim* s, uint32_t idx, uint32_t* dir, uint32_t* local, uint32_t* home) {
    Vcv_top* t = s->top;
    t->dbg_idx = idx;
    tick(s);
    t->eval();
    *dir = t->dbg_dir;
    *local = t->dbg_local;
    *home = t->dbg_home;
}

void cv_sim_status(CvSim* s, CvStatus* st) {
    Vcv_top* t = s->top;
    t->eval();
    st->cycles = t->stat_cycles;
    st->busy_cycles = t->stat_busy_cycles;
    st->idle = t->ctl_idle;
    st->any_pending = t->any_pending;
    st->any_record = t->any_record;
    st->reserved = 0;
}

}  // extern "C"
