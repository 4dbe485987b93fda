// cv_coherence: the coherence controller (stage 2): home-directory lookup and update, the
// home's request records, and the node's own page states and pending faults.
//
// It is nic_firmware::engine (nic-firmware/src/engine/) in hardware, transition for
// transition: one input (a parsed message or a local fault) at a time, the same checks in
// the same order, the same actions in the same order, the same tables. The engine's
// function calls become states with a return register each (home_start: hs_ret,
// deliver: dl_ret, node_granted: ng_ret, issue: is_ret, maybe_complete/drain: mc_ret,
// drop_local_copy: dr_ret); the call graph has no recursion deeper than the engine's
// (docs/hdl.md explains why one return register per routine is enough).
//
// Every input concerns one page, so the page's directory entry, local state and home are
// read from block RAM once (two cycles), worked on in registers, and written back at the
// end of the input (S_WBACK). The request records and pending faults are small register
// tables searched in one cycle (parallel compare, priority encoders).
//
// Outputs are action records (cv_defs.vh) pushed into the pipeline FIFO, one per cycle at
// most; the input ends with an A_END record carrying the first error, so the host (and the
// differential test) sees exactly where each input's actions stop.
`include "cv_defs.vh"
module cv_coherence #(
    parameter NPAGES = 64,   // directory / local-state / home entries (page index range)
    parameter IDXW   = 6,    // page index bits, 2**IDXW >= NPAGES
    parameter NREQ   = 16,   // home request records (the engine's `requests` table)
    parameter RW     = 4,    // record index bits
    parameter NPEND  = 4,    // pending-fault slots (the engine's `pending` table)
    parameter PW     = 2     // slot index bits
) (
    input  wire              clk,
    input  wire              rst,
    // ---- configuration (static while running) ----
    input  wire [3:0]        cfg_node,        // this node
    input  wire [4:0]        cfg_node_count,  // nodes in the cluster, 1..16
    input  wire [15:0]       cfg_vs_id,       // the virtual server served
    input  wire [63:0]       cfg_page_base,   // logical page number of page index 0
    input  wire [RW:0]       cfg_nreq,        // records in use, NPEND < cfg_nreq <= NREQ
    input  wire [PW:0]       cfg_npend,       // pending slots in use, 1..NPEND
    // home table write (only while idle): page index -> home node; also initialises the
    // page's directory entry (Exclusive at this node) and local state, as Engine::new
    input  wire              home_we,
    input  wire [IDXW-1:0]   home_widx,
    input  wire [3:0]        home_wnode,
    input  wire              home_wvalid,
    // ---- parsed message from cv_parser (ready/valid) ----
    input  wire              m_valid,
    output wire              m_ready,
    input  wire [7:0]        m_err,
    input  wire [7:0]        m_kind,
    input  wire [15:0]       m_vs,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [15:0]       m_flags,         // only bit 0 is defined (HAS_COPY / EXCLUSIVE)
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [3:0]        m_src,
    input  wire [3:0]        m_dst,
    input  wire [63:0]       m_page,
    input  wire [63:0]       m_rid,
    input  wire [3:0]        m_req,
    // ---- local fault from the host's fetch-descriptor ring (ready/valid) ----
    input  wire              f_valid,
    output wire              f_ready,
    input  wire [63:0]       f_page,
    input  wire              f_write,
    input  wire [31:0]       f_vp,
    // ---- actions to the pipeline FIFO (push when a_ready) ----
    output reg               a_push,
    input  wire              a_ready,          // the FIFO can take one more
    output reg [`ACT_W-1:0]  a_act,
    // ---- per-page invalidation-ack counter in cv_fanout ----
    output reg               ack_arm,          // start counting acks of arm_mask for c_idx
    output reg  [15:0]       ack_arm_mask,
    output reg               ack_chk,          // an ack from ack_src: response next cycle
    output reg  [3:0]        ack_src,
    output wire [IDXW-1:0]   ack_idx,
    input  wire              ack_ok,           // the ack was expected
    input  wire              ack_last,         // and it was the last one
    // ---- debug / readout (port B of the RAMs, one cycle latency) ----
    input  wire [IDXW-1:0]   dbg_idx,
    output wire [22:0]       dbg_dir,          // {queued, busy, excl, owner[3:0], sharers}
    output wire [1:0]        dbg_local,
    output wire [4:0]        dbg_home,         // {valid, node}
    output wire              idle,
    output reg               any_pending,      // a pending-fault slot is in use
    output reg               any_record        // a request record is in use
);
    // ------------------------------------------------------------------ states
    localparam [6:0]
        S_IDLE = 7'd0, S_CHKM = 7'd1, S_CHKF = 7'd2, S_RD = 7'd3, S_LD = 7'd4,
        S_HREQ = 7'd5, S_REFUSE = 7'd6, S_HS0 = 7'd7, S_RSH = 7'd8, S_RFH1 = 7'd9,
        S_RFH2 = 7'd10, S_FR = 7'd11, S_WFH2 = 7'd13, S_FW = 7'd14,
        S_WSH1 = 7'd15, S_WSH2 = 7'd16, S_HS_FIN = 7'd17, S_DELIVER = 7'd18,
        S_ACK0 = 7'd19, S_ACK1 = 7'd20, S_ACK2 = 7'd21, S_ACK3 = 7'd22, S_WB = 7'd23,
        S_UNB = 7'd24, S_MC = 7'd25, S_DRAIN = 7'd26, S_DRAIN_R = 7'd27, S_NG0 = 7'd28,
        S_NG_INST = 7'd29, S_NG_FD = 7'd30, S_NG2 = 7'd31, S_NG_UNB = 7'd32, S_NG3 = 7'd33,
        S_ISSUE = 7'd34, S_NINV = 7'd35, S_NINV2 = 7'd36, S_DROP1 = 7'd37, S_DROP2 = 7'd38,
        S_NFWD = 7'd39, S_NFWD_W2 = 7'd40, S_NFWD_R2 = 7'd41, S_NFWD_R3 = 7'd42,
        S_NNACK = 7'd43, S_FAULT = 7'd44, S_FLUSH = 7'd45, S_WBACK = 7'd46, S_END = 7'd47;

    localparam [2:0] P_RSH = 3'd0, P_RFH = 3'd1, P_FR = 3'd2, P_WFH = 3'd3, P_FW = 3'd4,
                     P_WSH = 3'd5;
    localparam [1:0] G_SHARED = 2'd0, G_EXCL = 2'd1, G_UPGRADE = 2'd2;
    localparam [1:0] W_NONE = 2'd0, W_READ = 2'd1, W_WRITE = 2'd2;
    localparam [1:0] PH_FREE = 2'd0, PH_WAIT = 2'd1, PH_ACTIVE = 2'd2;

    reg [6:0] state;
    assign idle    = (state == S_IDLE);
    assign m_ready = (state == S_IDLE);
    assign f_ready = (state == S_IDLE) && !m_valid;

    // ------------------------------------------------------------------ current input
    reg        c_fault, c_write, c_flag, c_loaded;
    reg [7:0]  c_kind, c_err;
    reg [15:0] c_vs;
    reg [3:0]  c_src, c_dst, c_req;
    reg [63:0] c_page, c_rid;
    reg [31:0] c_vp;
    reg [IDXW-1:0] c_idx;
    assign ack_idx = c_idx;

    // working copy of the page: directory entry, local state, home
    reg        d_excl, d_busy, d_queued;
    reg [3:0]  d_owner;
    reg [15:0] d_sharers;
    reg [1:0]  l_state;
    reg [3:0]  h_home;

    // ------------------------------------------------------------------ block RAMs
    reg               ram_we;
    reg  [IDXW-1:0]   ram_waddr;
    reg  [22:0]       dir_wdata;
    reg  [1:0]        loc_wdata;
    wire [22:0]       dir_rdata;
    wire [1:0]        loc_rdata;
    wire [4:0]        home_rdata;
    wire [IDXW-1:0]   ram_raddr = c_idx;

    cv_bram #(.W(23), .DEPTH(NPAGES), .AW(IDXW)) dir_ram (
        .clk(clk), .we(ram_we || home_we), .waddr(home_we ? home_widx : ram_waddr),
        .wdata(home_we ? {2'b00, 1'b1, cfg_node, 16'd0} : dir_wdata),
        .raddr_a(ram_raddr), .rdata_a(dir_rdata), .raddr_b(dbg_idx), .rdata_b(dbg_dir));
    cv_bram #(.W(2), .DEPTH(NPAGES), .AW(IDXW)) local_ram (
        .clk(clk), .we(ram_we || home_we), .waddr(home_we ? home_widx : ram_waddr),
        .wdata(home_we ? ((home_wvalid && home_wnode == cfg_node) ? `PS_EXCLUSIVE : `PS_INVALID)
                       : loc_wdata),
        .raddr_a(ram_raddr), .rdata_a(loc_rdata), .raddr_b(dbg_idx), .rdata_b(dbg_local));
    /* verilator lint_off PINCONNECTEMPTY */
    cv_bram #(.W(5), .DEPTH(NPAGES), .AW(IDXW)) home_ram (
        .clk(clk), .we(home_we), .waddr(home_widx), .wdata({home_wvalid, home_wnode}),
        .raddr_a(ram_raddr), .rdata_a(home_rdata), .raddr_b(dbg_idx), .rdata_b(dbg_home));
    /* verilator lint_on PINCONNECTEMPTY */

    // ------------------------------------------------------------------ request records
    reg [1:0]      r_phase [0:NREQ-1];
    reg [IDXW-1:0] r_idx   [0:NREQ-1];
    reg [63:0]     r_rid   [0:NREQ-1];
    reg [63:0]     r_seq   [0:NREQ-1];
    reg [3:0]      r_reqr  [0:NREQ-1];
    reg            r_write [0:NREQ-1];
    reg            r_hc    [0:NREQ-1];   // has_copy as asked
    reg            r_had   [0:NREQ-1];   // requester was a sharer when started
    reg            r_acks  [0:NREQ-1];   // invalidation acks outstanding (cv_fanout counts)
    reg [3:0]      r_fwd   [0:NREQ-1];   // forwarded to
    reg            r_areq  [0:NREQ-1];   // awaiting the requester's Unblock
    reg            r_awb   [0:NREQ-1];   // awaiting the old owner's Writeback
    reg [RW:0]     remote_records;       // records held for other nodes
    reg [63:0]     next_seq;

    // ------------------------------------------------------------------ pending faults
    reg [1:0]      p_want [0:NPEND-1];
    reg [IDXW-1:0] p_idx  [0:NPEND-1];
    reg [63:0]     p_rid  [0:NPEND-1];
    reg [63:0]     p_rvps [0:NPEND-1];
    reg [63:0]     p_wvps [0:NPEND-1];
    reg            p_def  [0:NPEND-1];   // request to ourselves not handed to the home yet
    reg [63:0]     next_rid;

    // ------------------------------------------------------------------ searches
    integer i;
    reg          rec_free_ok, act_ok, wait_ok, pend_ok, pfree_ok, pdef_ok;
    reg [RW-1:0] rec_free_i, act_i, wait_i;
    reg [PW-1:0] pend_i, pfree_i, pdef_i;
    reg [63:0]   wait_seq;
    always @* begin
        rec_free_ok = 1'b0; rec_free_i = {RW{1'b0}};
        act_ok = 1'b0; act_i = {RW{1'b0}};
        wait_ok = 1'b0; wait_i = {RW{1'b0}}; wait_seq = 64'd0;
        any_record = 1'b0;
        for (i = NREQ - 1; i >= 0; i = i - 1) begin
            if (i < cfg_nreq) begin
                if (r_phase[i] != PH_FREE) any_record = 1'b1;
                if (r_phase[i] == PH_FREE) begin
                    rec_free_ok = 1'b1; rec_free_i = i[RW-1:0];
                end
                if (r_phase[i] == PH_ACTIVE && r_idx[i] == c_idx && r_rid[i] == c_rid) begin
                    act_ok = 1'b1; act_i = i[RW-1:0];
                end
            end
        end
        // FIFO per page: the waiting record of this page with the lowest arrival number
        for (i = 0; i < NREQ; i = i + 1) begin
            if (i < cfg_nreq && r_phase[i] == PH_WAIT && r_idx[i] == c_idx
                && (!wait_ok || r_seq[i] < wait_seq)) begin
                wait_ok = 1'b1; wait_i = i[RW-1:0]; wait_seq = r_seq[i];
            end
        end
        pend_ok = 1'b0; pend_i = {PW{1'b0}};
        pfree_ok = 1'b0; pfree_i = {PW{1'b0}};
        pdef_ok = 1'b0; pdef_i = {PW{1'b0}};
        any_pending = 1'b0;
        for (i = NPEND - 1; i >= 0; i = i - 1) begin
            if (i < cfg_npend) begin
                if (p_want[i] != W_NONE) any_pending = 1'b1;
                if (p_want[i] != W_NONE && p_idx[i] == c_idx) begin
                    pend_ok = 1'b1; pend_i = i[PW-1:0];
                end
                if (p_want[i] == W_NONE) begin
                    pfree_ok = 1'b1; pfree_i = i[PW-1:0];
                end
                if (p_want[i] != W_NONE && p_def[i]) begin
                    pdef_ok = 1'b1; pdef_i = i[PW-1:0];
                end
            end
        end
    end

    // lowest set bit of the FaultDone mask
    reg [63:0] fd_mask;
    reg [5:0]  fd_vp;
    always @* begin
        fd_vp = 6'd0;
        for (i = 63; i >= 0; i = i - 1)
            if (fd_mask[i]) fd_vp = i[5:0];
    end

    // vima::wire::is_coherent_page
    function coherent;
        input [63:0] page;
        coherent = (page != 64'd0) && !(page >= 64'd1 && page <= 64'd4)
                   && (page < 64'h0100_0000);
    endfunction

    function [15:0] bit16;
        input [3:0] n;
        bit16 = 16'd1 << n;
    endfunction

    // an action record about the current page
    function [`ACT_W-1:0] act;
        input [3:0]  kind;
        input [3:0]  dst;
        input [7:0]  msg;
        input        flag;
        input [3:0]  req;
        input [63:0] rid;
        input [1:0]  psk;
        begin
            act = {`ACT_W{1'b0}};
            act[`F_KIND] = kind;
            act[`F_PAGE] = c_page;
            act[`F_DST]  = dst;
            act[`F_MSG]  = msg;
            act[`F_FLAG] = flag;
            act[`F_REQ]  = req;
            act[`F_RID]  = rid;
            act[`F_PSK]  = psk;
        end
    endfunction

    // ------------------------------------------------------------------ routine registers
    // home_request / home_start
    reg [3:0]  hq_req;  reg hq_write, hq_hc; reg [63:0] hq_rid; reg [6:0] hq_ret;
    reg [3:0]  hs_req;  reg hs_write, hs_hc; reg [63:0] hs_rid; reg [6:0] hs_ret;
    reg        hs_has_rec, hs_keeps, hs_err, hs_result, hs_had, hs_hcopy;
    reg [RW-1:0] hs_rec;
    reg [2:0]  hs_plan;
    reg [3:0]  hs_owner;
    reg [15:0] hs_remote;
    // refuse
    reg [3:0]  rf_req; reg [63:0] rf_rid; reg [6:0] rf_ret;
    // deliver
    reg [3:0]  dl_to; reg [1:0] dl_grant; reg [63:0] dl_rid; reg [6:0] dl_ret;
    // node_granted
    reg [3:0]  ng_src; reg [63:0] ng_rid; reg [1:0] ng_grant; reg ng_data; reg [6:0] ng_ret;
    reg [PW-1:0] ng_slot; reg [1:0] ng_new; reg ng_third, ng_upnext;
    // issue
    reg [PW-1:0] is_slot; reg [6:0] is_ret;
    // maybe_complete / drain
    reg [RW-1:0] mc_rec; reg [6:0] mc_ret;
    // drop_local_copy
    reg [6:0]  dr_ret;

    // plan of home_start, from the working directory entry (combinational)
    reg        pl_bad, pl_keeps, pl_had, pl_hcopy;
    reg [2:0]  pl_plan;
    reg [15:0] pl_others, pl_remote;
    always @* begin
        pl_bad = 1'b0; pl_plan = P_RSH; pl_had = 1'b0; pl_hcopy = 1'b0;
        pl_others = d_sharers & ~bit16(hs_req);
        pl_remote = 16'd0;
        if (d_excl && d_owner == hs_req) pl_bad = 1'b1;
        else if (!hs_write && !d_excl && d_sharers[hs_req]) pl_bad = 1'b1;
        else if (!hs_write && !d_excl) pl_plan = P_RSH;
        else if (!hs_write && d_owner == cfg_node) pl_plan = P_RFH;
        else if (!hs_write) pl_plan = P_FR;
        else if (d_excl && d_owner == cfg_node) pl_plan = P_WFH;
        else if (d_excl) pl_plan = P_FW;
        else begin
            pl_plan = P_WSH;
            pl_had = d_sharers[hs_req];
            pl_hcopy = pl_others[cfg_node];
            pl_remote = pl_others & ~bit16(cfg_node);
        end
        pl_keeps = (pl_plan == P_FR) || (pl_plan == P_FW)
                   || (pl_plan == P_WSH && pl_remote != 16'd0);
    end

    // record allocation rule (Engine::alloc_record): records beyond `pending` are for
    // remote requesters; ours always find one
    wire hs_remote_req = (hs_req != cfg_node);
    wire hq_remote_req = (hq_req != cfg_node);
    wire [RW:0] remote_limit = cfg_nreq - {{(RW-PW){1'b0}}, cfg_npend};
    wire hq_can_alloc = rec_free_ok && !(hq_remote_req && remote_records >= remote_limit);
    wire hs_can_alloc = rec_free_ok && !(hs_remote_req && remote_records >= remote_limit);

    wire peer_src = ({1'b0, c_src} < cfg_node_count) && (c_src != cfg_node);
    wire peer_req = ({1'b0, c_req} < cfg_node_count) && (c_req != cfg_node);
    wire [63:0] c_off = c_page - cfg_page_base;
    wire in_range = (c_page >= cfg_page_base) && (c_off < NPAGES);
    wire [63:0] c_vpbit = 64'd1 << c_vp[5:0];

    // ------------------------------------------------------------------ the machine
    always @(posedge clk) begin
        a_push  <= 1'b0;
        ram_we  <= 1'b0;
        ack_arm <= 1'b0;
        ack_chk <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            remote_records <= {(RW+1){1'b0}};
            next_seq <= 64'd0;
            next_rid <= 64'd1;
            fd_mask <= 64'd0;
            for (i = 0; i < NREQ; i = i + 1) begin
                r_phase[i] <= PH_FREE; r_idx[i] <= {IDXW{1'b0}}; r_rid[i] <= 64'd0;
                r_seq[i] <= 64'd0; r_reqr[i] <= 4'd0; r_write[i] <= 1'b0; r_hc[i] <= 1'b0;
                r_had[i] <= 1'b0; r_acks[i] <= 1'b0; r_fwd[i] <= 4'd0; r_areq[i] <= 1'b0;
                r_awb[i] <= 1'b0;
            end
            for (i = 0; i < NPEND; i = i + 1) begin
                p_want[i] <= W_NONE; p_idx[i] <= {IDXW{1'b0}}; p_rid[i] <= 64'd0;
                p_rvps[i] <= 64'd0; p_wvps[i] <= 64'd0; p_def[i] <= 1'b0;
            end
        end else begin
            case (state)
            // ---------------------------------------------------------- accept an input
            S_IDLE: begin
                c_err <= `E_NONE;
                c_loaded <= 1'b0;
                if (m_valid) begin
                    c_fault <= 1'b0;
                    c_kind <= m_kind; c_vs <= m_vs; c_src <= m_src; c_dst <= m_dst;
                    c_page <= m_page; c_rid <= m_rid; c_req <= m_req;
                    c_flag <= m_flags[0]; c_write <= 1'b0; c_vp <= 32'd0;
                    c_idx <= m_page[IDXW-1:0] - cfg_page_base[IDXW-1:0];
                    if (m_err != `E_NONE) begin
                        c_err <= m_err;
                        state <= S_END;
                    end else state <= S_CHKM;
                end else if (f_valid) begin
                    c_fault <= 1'b1;
                    c_kind <= 8'd0; c_vs <= cfg_vs_id; c_src <= cfg_node; c_dst <= cfg_node;
                    c_page <= f_page; c_rid <= 64'd0; c_req <= 4'd0; c_flag <= 1'b0;
                    c_write <= f_write; c_vp <= f_vp;
                    c_idx <= f_page[IDXW-1:0] - cfg_page_base[IDXW-1:0];
                    state <= S_CHKF;
                end
            end
            // Engine::dispatch, the checks before the page is known
            S_CHKM: begin
                if (c_vs != cfg_vs_id)          begin c_err <= `E_WRONG_VS;      state <= S_END; end
                else if (c_dst != cfg_node)     begin c_err <= `E_WRONG_DST;     state <= S_END; end
                else if (!peer_src)             begin c_err <= `E_BAD_SOURCE;    state <= S_END; end
                else if (c_kind >= 8'h20)       begin c_err <= `E_NOT_COHERENCE; state <= S_END; end
                else if (!coherent(c_page))     begin c_err <= `E_NOT_COHERENT;  state <= S_END; end
                else if (!in_range)             begin c_err <= `E_UNKNOWN_PAGE;  state <= S_END; end
                else state <= S_RD;
            end
            // Engine::node_fault: check_page first
            S_CHKF: begin
                if (!coherent(c_page))          begin c_err <= `E_NOT_COHERENT;  state <= S_END; end
                else if (!in_range)             begin c_err <= `E_UNKNOWN_PAGE;  state <= S_END; end
                else state <= S_RD;
            end
            S_RD: state <= S_LD;   // the RAMs read c_idx
            S_LD: begin
                {d_queued, d_busy, d_excl, d_owner, d_sharers} <= dir_rdata;
                l_state <= loc_rdata;
                h_home <= home_rdata[3:0];
                if (!home_rdata[4]) begin
                    c_err <= `E_UNKNOWN_PAGE; state <= S_END;
                end else begin
                    c_loaded <= 1'b1;
                    if (c_fault) begin
                        if (c_vp >= 32'd64) begin c_err <= `E_BAD_VP; state <= S_FLUSH; end
                        else state <= S_FAULT;
                    end else begin
                        case (c_kind)
                        `K_READ_REQ, `K_WRITE_REQ: begin
                            if (home_rdata[3:0] != cfg_node) begin c_err <= `E_NOT_HOME; state <= S_FLUSH; end
                            else begin
                                hq_req <= c_src; hq_write <= (c_kind == `K_WRITE_REQ);
                                hq_hc <= c_flag; hq_rid <= c_rid; hq_ret <= S_FLUSH;
                                state <= S_HREQ;
                            end
                        end
                        `K_INV_ACK, `K_WRITEBACK, `K_UNBLOCK: begin
                            if (home_rdata[3:0] != cfg_node) begin c_err <= `E_NOT_HOME; state <= S_FLUSH; end
                            else state <= (c_kind == `K_INV_ACK) ? S_ACK0 :
                                          (c_kind == `K_WRITEBACK) ? S_WB : S_UNB;
                        end
                        `K_INVALIDATE, `K_UPGRADE_GRANT, `K_NACK: begin
                            if (home_rdata[3:0] != c_src) begin c_err <= `E_NOT_FROM_HOME; state <= S_FLUSH; end
                            else if (c_kind == `K_INVALIDATE) state <= S_NINV;
                            else if (c_kind == `K_NACK) state <= S_NNACK;
                            else begin
                                ng_src <= c_src; ng_rid <= c_rid; ng_grant <= G_UPGRADE;
                                ng_data <= 1'b0; ng_ret <= S_FLUSH; state <= S_NG0;
                            end
                        end
                        `K_FORWARD_READ, `K_FORWARD_WRITE: begin
                            if (home_rdata[3:0] != c_src) begin c_err <= `E_NOT_FROM_HOME; state <= S_FLUSH; end
                            else if (!peer_req) begin c_err <= `E_BAD_SOURCE; state <= S_FLUSH; end
                            else state <= S_NFWD;
                        end
                        `K_PAGE_DATA: begin
                            ng_src <= c_src; ng_rid <= c_rid; ng_grant <= c_flag ? G_EXCL : G_SHARED;
                            ng_data <= 1'b1; ng_ret <= S_FLUSH; state <= S_NG0;
                        end
                        default: begin c_err <= `E_NOT_COHERENCE; state <= S_FLUSH; end
                        endcase
                    end
                end
            end
            // ---------------------------------------------------------- home_request
            S_HREQ: begin
                if (d_busy || d_queued) begin
                    if (hq_can_alloc) begin
                        r_phase[rec_free_i] <= PH_WAIT; r_idx[rec_free_i] <= c_idx;
                        r_rid[rec_free_i] <= hq_rid; r_seq[rec_free_i] <= next_seq;
                        r_reqr[rec_free_i] <= hq_req; r_write[rec_free_i] <= hq_write;
                        r_hc[rec_free_i] <= hq_hc; r_had[rec_free_i] <= 1'b0;
                        r_acks[rec_free_i] <= 1'b0; r_fwd[rec_free_i] <= 4'd0;
                        r_areq[rec_free_i] <= 1'b0; r_awb[rec_free_i] <= 1'b0;
                        next_seq <= next_seq + 64'd1;
                        if (hq_remote_req) remote_records <= remote_records + 1'b1;
                        d_queued <= 1'b1;
                        state <= hq_ret;
                    end else begin
                        rf_req <= hq_req; rf_rid <= hq_rid; rf_ret <= hq_ret;
                        state <= S_REFUSE;
                    end
                end else begin
                    hs_req <= hq_req; hs_write <= hq_write; hs_hc <= hq_hc; hs_rid <= hq_rid;
                    hs_has_rec <= 1'b0; hs_ret <= hq_ret;
                    state <= S_HS0;
                end
            end
            // refuse: Nack a peer; our own requests always have room (else: storage error)
            S_REFUSE: begin
                if (rf_req == cfg_node) begin
                    if (c_err == `E_NONE) c_err <= `E_STORAGE;
                    hs_err <= 1'b1;
                    state <= rf_ret;
                end else if (a_ready) begin
                    a_push <= 1'b1;
                    a_act <= act(`A_SEND, rf_req, `K_NACK, 1'b0, 4'd0, rf_rid, 2'd0);
                    state <= rf_ret;
                end
            end
            // ---------------------------------------------------------- home_start
            S_HS0: begin
                hs_err <= 1'b0; hs_result <= 1'b0;
                hs_plan <= pl_plan; hs_keeps <= pl_keeps; hs_had <= pl_had;
                hs_hcopy <= pl_hcopy; hs_remote <= pl_remote; hs_owner <= d_owner;
                if (pl_bad) begin
                    if (c_err == `E_NONE) c_err <= `E_UNEXPECTED;
                    hs_err <= 1'b1;
                    state <= hs_ret;
                end else if (pl_keeps && !hs_has_rec && !hs_can_alloc) begin
                    rf_req <= hs_req; rf_rid <= hs_rid; rf_ret <= hs_ret;
                    state <= S_REFUSE;
                end else begin
                    if (pl_keeps && !hs_has_rec) begin
                        hs_rec <= rec_free_i;
                        r_phase[rec_free_i] <= PH_WAIT; r_idx[rec_free_i] <= c_idx;
                        r_rid[rec_free_i] <= hs_rid; r_seq[rec_free_i] <= next_seq;
                        r_reqr[rec_free_i] <= hs_req;
                        next_seq <= next_seq + 64'd1;
                        if (hs_remote_req) remote_records <= remote_records + 1'b1;
                    end else if (!pl_keeps && hs_has_rec) begin
                        // free_record
                        if (r_phase[hs_rec] != PH_FREE && r_reqr[hs_rec] != cfg_node)
                            remote_records <= remote_records - 1'b1;
                        r_phase[hs_rec] <= PH_FREE;
                    end
                    case (pl_plan)
                        P_RSH: state <= S_RSH;
                        P_RFH: state <= S_RFH1;
                        P_FR:  state <= S_FR;
                        P_WFH: begin dr_ret <= S_WFH2; state <= S_DROP1; end
                        P_FW:  state <= S_FW;
                        default: state <= S_WSH1;
                    endcase
                end
            end
            S_RSH: begin
                d_excl <= 1'b0; d_owner <= 4'd0; d_sharers <= d_sharers | bit16(hs_req);
                dl_to <= hs_req; dl_grant <= G_SHARED; dl_rid <= hs_rid; dl_ret <= S_HS_FIN;
                state <= S_DELIVER;
            end
            S_RFH1: if (a_ready) begin
                l_state <= `PS_SHARED;
                a_push <= 1'b1;
                a_act <= act(`A_DOWNGRADE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0);
                state <= S_RFH2;
            end
            S_RFH2: if (a_ready) begin
                d_excl <= 1'b0; d_owner <= 4'd0; d_sharers <= bit16(cfg_node) | bit16(hs_req);
                a_push <= 1'b1;
                a_act <= act(`A_SENDPAGE, hs_req, 8'd0, 1'b0, 4'd0, hs_rid, `PSK_SHARED);
                state <= S_HS_FIN;
            end
            S_FR: if (a_ready) begin
                d_excl <= 1'b0; d_owner <= 4'd0; d_sharers <= bit16(hs_owner) | bit16(hs_req);
                a_push <= 1'b1;
                a_act <= act(`A_SEND, hs_owner, `K_FORWARD_READ, 1'b0, hs_req, hs_rid, 2'd0);
                state <= S_HS_FIN;
            end
            S_WFH2: if (a_ready) begin
                d_excl <= 1'b1; d_owner <= hs_req; d_sharers <= 16'd0;
                a_push <= 1'b1;
                a_act <= act(`A_SENDPAGE, hs_req, 8'd0, 1'b0, 4'd0, hs_rid, `PSK_EXCLUSIVE);
                state <= S_HS_FIN;
            end
            S_FW: if (a_ready) begin
                d_excl <= 1'b1; d_owner <= hs_req; d_sharers <= 16'd0;
                a_push <= 1'b1;
                a_act <= act(`A_SEND, hs_owner, `K_FORWARD_WRITE, 1'b0, hs_req, hs_rid, 2'd0);
                state <= S_HS_FIN;
            end
            S_WSH1: begin
                if (hs_hcopy) begin dr_ret <= S_WSH2; state <= S_DROP1; end
                else state <= S_WSH2;
            end
            S_WSH2: begin
                if (hs_remote == 16'd0) begin
                    d_excl <= 1'b1; d_owner <= hs_req; d_sharers <= 16'd0;
                    dl_to <= hs_req; dl_grant <= hs_had ? G_UPGRADE : G_EXCL;
                    dl_rid <= hs_rid; dl_ret <= S_HS_FIN;
                    state <= S_DELIVER;
                end else if (a_ready) begin
                    // every invalidation goes out now; the grant waits for the last ack
                    d_excl <= 1'b1; d_owner <= hs_req; d_sharers <= 16'd0;
                    ack_arm <= 1'b1; ack_arm_mask <= hs_remote;
                    a_push <= 1'b1;
                    a_act <= act(`A_FANOUT, 4'd0, `K_INVALIDATE, 1'b0, 4'd0, hs_rid, 2'd0)
                             | ({{(`ACT_W-16){1'b0}}, hs_remote} << 163);
                    state <= S_HS_FIN;
                end
            end
            S_HS_FIN: begin
                if (hs_keeps) begin
                    r_phase[hs_rec] <= PH_ACTIVE; r_idx[hs_rec] <= c_idx;
                    r_rid[hs_rec] <= hs_rid; r_reqr[hs_rec] <= hs_req;
                    r_write[hs_rec] <= hs_write; r_hc[hs_rec] <= hs_hc;
                    r_had[hs_rec] <= (hs_plan == P_WSH) ? hs_had : 1'b0;
                    r_acks[hs_rec] <= (hs_plan == P_WSH);
                    r_fwd[hs_rec] <= (hs_plan == P_FR || hs_plan == P_FW) ? hs_owner : 4'd0;
                    r_areq[hs_rec] <= (hs_plan == P_FR || hs_plan == P_FW);
                    r_awb[hs_rec] <= (hs_plan == P_FR) && (hs_req != cfg_node);
                    d_busy <= 1'b1;
                    hs_result <= 1'b1;
                end
                state <= hs_ret;
            end
            // deliver: a page from our memory (or a grant) to dl_to, or to ourselves
            S_DELIVER: begin
                if (dl_to == cfg_node) begin
                    ng_src <= cfg_node; ng_rid <= dl_rid; ng_grant <= dl_grant;
                    ng_data <= 1'b0; ng_ret <= dl_ret;
                    state <= S_NG0;
                end else if (a_ready) begin
                    a_push <= 1'b1;
                    if (dl_grant == G_UPGRADE)
                        a_act <= act(`A_SEND, dl_to, `K_UPGRADE_GRANT, 1'b0, 4'd0, dl_rid, 2'd0);
                    else
                        a_act <= act(`A_SENDPAGE, dl_to, 8'd0, 1'b0, 4'd0, dl_rid,
                                     dl_grant == G_EXCL ? `PSK_EXCLUSIVE : `PSK_SHARED);
                    state <= dl_ret;
                end
            end
            // ---------------------------------------------------------- home: replies
            S_ACK0: begin
                if (!act_ok || !r_acks[act_i]) begin
                    c_err <= `E_UNEXPECTED; state <= S_FLUSH;
                end else begin
                    ack_chk <= 1'b1; ack_src <= c_src; mc_rec <= act_i;
                    state <= S_ACK1;
                end
            end
            S_ACK1: state <= S_ACK2;   // cv_fanout answers
            S_ACK2: begin
                if (!ack_ok) begin
                    c_err <= `E_UNEXPECTED; state <= S_FLUSH;
                end else if (ack_last) begin
                    r_acks[mc_rec] <= 1'b0;
                    dl_to <= r_reqr[mc_rec]; dl_grant <= r_had[mc_rec] ? G_UPGRADE : G_EXCL;
                    dl_rid <= c_rid; dl_ret <= S_ACK3;
                    state <= S_DELIVER;
                end else state <= S_ACK3;
            end
            S_ACK3: begin mc_ret <= S_FLUSH; state <= S_MC; end
            S_WB: begin
                if (!act_ok || !r_awb[act_i] || r_fwd[act_i] != c_src) begin
                    c_err <= `E_UNEXPECTED; state <= S_FLUSH;
                end else if (a_ready) begin
                    a_push <= 1'b1;
                    a_act <= act(`A_STORE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0);
                    r_awb[act_i] <= 1'b0;
                    mc_rec <= act_i; mc_ret <= S_FLUSH;
                    state <= S_MC;
                end
            end
            S_UNB: begin
                if (!act_ok || !r_areq[act_i] || r_reqr[act_i] != c_src) begin
                    c_err <= `E_UNEXPECTED; state <= S_FLUSH;
                end else begin
                    r_areq[act_i] <= 1'b0;
                    mc_rec <= act_i; mc_ret <= S_FLUSH;
                    state <= S_MC;
                end
            end
            // maybe_complete: end the operation when nothing is missing, then drain
            S_MC: begin
                if (r_acks[mc_rec] || r_areq[mc_rec] || r_awb[mc_rec]) state <= mc_ret;
                else begin
                    if (r_reqr[mc_rec] != cfg_node) remote_records <= remote_records - 1'b1;
                    r_phase[mc_rec] <= PH_FREE;
                    d_busy <= 1'b0;
                    state <= S_DRAIN;
                end
            end
            // drain: start the queued requests of the page in arrival order
            S_DRAIN: begin
                if (!wait_ok) begin
                    d_queued <= 1'b0;
                    state <= mc_ret;
                end else begin
                    hs_req <= r_reqr[wait_i]; hs_write <= r_write[wait_i];
                    hs_hc <= r_hc[wait_i]; hs_rid <= r_rid[wait_i];
                    hs_has_rec <= 1'b1; hs_rec <= wait_i; hs_ret <= S_DRAIN_R;
                    state <= S_HS0;
                end
            end
            S_DRAIN_R: begin
                if (hs_err) begin
                    // a request the directory says cannot be: drop it, serve the rest
                    if (r_phase[hs_rec] == PH_WAIT) begin
                        if (r_reqr[hs_rec] != cfg_node) remote_records <= remote_records - 1'b1;
                        r_phase[hs_rec] <= PH_FREE;
                    end
                    state <= S_DRAIN;
                end else if (hs_result) state <= mc_ret;
                else state <= S_DRAIN;
            end
            // ---------------------------------------------------------- node_granted
            S_NG0: begin : ng0
                reg ok;
                reg [1:0] nw;
                reg [63:0] done;
                ok = pend_ok && p_rid[pend_i] == ng_rid && !p_def[pend_i];
                nw = `PS_INVALID; done = 64'd0;
                if (ok) begin
                    if (ng_grant == G_SHARED && p_want[pend_i] == W_READ && l_state == `PS_INVALID) begin
                        nw = `PS_SHARED; done = p_rvps[pend_i];
                    end else if (ng_grant == G_EXCL && p_want[pend_i] == W_WRITE && l_state == `PS_INVALID) begin
                        nw = `PS_EXCLUSIVE; done = p_rvps[pend_i] | p_wvps[pend_i];
                    end else if (ng_grant == G_UPGRADE && p_want[pend_i] == W_WRITE
                                 && l_state == `PS_SHARED && ng_src == h_home) begin
                        nw = `PS_EXCLUSIVE; done = p_rvps[pend_i] | p_wvps[pend_i];
                    end else ok = 1'b0;
                end
                if (ok && !ng_data && ng_src != cfg_node && ng_grant != G_UPGRADE) ok = 1'b0;
                // data from a third party for our own request: the home must expect it
                if (ok && ng_src != h_home && h_home == cfg_node
                    && !(act_ok && r_reqr[act_i] == cfg_node && r_areq[act_i] && r_fwd[act_i] == ng_src))
                    ok = 1'b0;
                if (!ok) begin
                    if (c_err == `E_NONE) c_err <= `E_UNEXPECTED;
                    state <= ng_ret;
                end else begin
                    ng_slot <= pend_i; ng_new <= nw; fd_mask <= done;
                    ng_third <= (ng_src != h_home);
                    ng_upnext <= (nw == `PS_SHARED) && (p_wvps[pend_i] != 64'd0);
                    state <= S_NG_INST;
                end
            end
            S_NG_INST: if (a_ready) begin
                l_state <= ng_new;
                a_push <= 1'b1;
                a_act <= act(`A_INSTALL, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0)
                         | ({{(`ACT_W-2){1'b0}}, ng_new} << 181)
                         | ({{(`ACT_W-1){1'b0}}, ng_data} << 183);
                state <= S_NG_FD;
            end
            S_NG_FD: begin
                if (fd_mask == 64'd0) state <= S_NG2;
                else if (a_ready) begin
                    a_push <= 1'b1;
                    a_act <= act(`A_FAULTDONE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0)
                             | ({{(`ACT_W-6){1'b0}}, fd_vp} << 157);
                    fd_mask <= fd_mask & ~(64'd1 << fd_vp);
                end
            end
            S_NG2: begin
                if (ng_upnext) begin
                    p_rvps[ng_slot] <= 64'd0; p_want[ng_slot] <= W_WRITE;
                end else begin
                    p_want[ng_slot] <= W_NONE; p_idx[ng_slot] <= {IDXW{1'b0}};
                    p_rid[ng_slot] <= 64'd0; p_rvps[ng_slot] <= 64'd0;
                    p_wvps[ng_slot] <= 64'd0; p_def[ng_slot] <= 1'b0;
                end
                if (!ng_third) state <= S_NG3;
                else if (h_home == cfg_node) begin
                    // home_requester_done: the data stands for the writeback too
                    r_areq[act_i] <= 1'b0; r_awb[act_i] <= 1'b0;
                    mc_rec <= act_i; mc_ret <= S_NG3;
                    state <= S_MC;
                end else state <= S_NG_UNB;
            end
            S_NG_UNB: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_SEND, h_home, `K_UNBLOCK, 1'b0, 4'd0, ng_rid, 2'd0);
                state <= S_NG3;
            end
            S_NG3: begin
                if (ng_upnext) begin
                    is_slot <= ng_slot; is_ret <= ng_ret; state <= S_ISSUE;
                end else state <= ng_ret;
            end
            // ---------------------------------------------------------- issue
            S_ISSUE: begin
                if (h_home == cfg_node) begin
                    p_rid[is_slot] <= next_rid; next_rid <= next_rid + 64'd1;
                    p_def[is_slot] <= 1'b1;
                    state <= is_ret;
                end else if (a_ready) begin
                    p_rid[is_slot] <= next_rid; next_rid <= next_rid + 64'd1;
                    a_push <= 1'b1;
                    if (p_want[is_slot] == W_WRITE)
                        a_act <= act(`A_SEND, h_home, `K_WRITE_REQ, l_state == `PS_SHARED,
                                     4'd0, next_rid, 2'd0);
                    else
                        a_act <= act(`A_SEND, h_home, `K_READ_REQ, 1'b0, 4'd0, next_rid, 2'd0);
                    state <= is_ret;
                end
            end
            // ---------------------------------------------------------- node: from home
            S_NINV: begin
                if (l_state != `PS_SHARED) begin c_err <= `E_UNEXPECTED; state <= S_FLUSH; end
                else begin dr_ret <= S_NINV2; state <= S_DROP1; end
            end
            S_NINV2: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_SEND, c_src, `K_INV_ACK, 1'b0, 4'd0, c_rid, 2'd0);
                state <= S_FLUSH;
            end
            S_DROP1: if (a_ready) begin
                l_state <= `PS_INVALID;
                a_push <= 1'b1;
                a_act <= act(`A_INVAL, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0);
                state <= S_DROP2;
            end
            S_DROP2: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_WAKE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0);
                state <= dr_ret;
            end
            S_NFWD: begin
                if (l_state != `PS_EXCLUSIVE) begin c_err <= `E_UNEXPECTED; state <= S_FLUSH; end
                else if (c_kind == `K_FORWARD_WRITE) begin dr_ret <= S_NFWD_W2; state <= S_DROP1; end
                else if (a_ready) begin
                    l_state <= `PS_SHARED;
                    a_push <= 1'b1;
                    a_act <= act(`A_DOWNGRADE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0);
                    state <= S_NFWD_R2;
                end
            end
            S_NFWD_W2: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_SENDPAGE, c_req, 8'd0, 1'b0, 4'd0, c_rid, `PSK_EXCLUSIVE);
                state <= S_FLUSH;
            end
            S_NFWD_R2: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_SENDPAGE, c_req, 8'd0, 1'b0, 4'd0, c_rid, `PSK_SHARED);
                state <= (c_req != c_src) ? S_NFWD_R3 : S_FLUSH;
            end
            S_NFWD_R3: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_SENDPAGE, c_src, 8'd0, 1'b0, 4'd0, c_rid, `PSK_WRITEBACK);
                state <= S_FLUSH;
            end
            S_NNACK: begin
                if (!pend_ok || p_rid[pend_i] != c_rid) begin
                    c_err <= `E_UNEXPECTED; state <= S_FLUSH;
                end else begin
                    is_slot <= pend_i; is_ret <= S_FLUSH; state <= S_ISSUE;
                end
            end
            // ---------------------------------------------------------- node_fault
            S_FAULT: begin
                if (l_state == `PS_EXCLUSIVE || (l_state == `PS_SHARED && !c_write)) begin
                    if (a_ready) begin
                        a_push <= 1'b1;
                        a_act <= act(`A_FAULTDONE, 4'd0, 8'd0, 1'b0, 4'd0, 64'd0, 2'd0)
                                 | ({{(`ACT_W-6){1'b0}}, c_vp[5:0]} << 157);
                        state <= S_FLUSH;
                    end
                end else if (pend_ok) begin
                    // coalesce
                    if (c_write) p_wvps[pend_i] <= p_wvps[pend_i] | c_vpbit;
                    else p_rvps[pend_i] <= p_rvps[pend_i] | c_vpbit;
                    state <= S_FLUSH;
                end else if (!pfree_ok) begin
                    c_err <= `E_PENDING_FULL; state <= S_FLUSH;
                end else begin
                    p_want[pfree_i] <= c_write ? W_WRITE : W_READ;
                    p_idx[pfree_i] <= c_idx; p_rid[pfree_i] <= 64'd0; p_def[pfree_i] <= 1'b0;
                    p_rvps[pfree_i] <= c_write ? 64'd0 : c_vpbit;
                    p_wvps[pfree_i] <= c_write ? c_vpbit : 64'd0;
                    is_slot <= pfree_i; is_ret <= S_FLUSH;
                    state <= S_ISSUE;
                end
            end
            // ---------------------------------------------------------- finish
            // flush_deferred: our own request for this page goes to our home role
            S_FLUSH: begin
                if (c_loaded && pdef_ok) begin
                    p_def[pdef_i] <= 1'b0;
                    hq_req <= cfg_node; hq_write <= (p_want[pdef_i] == W_WRITE);
                    hq_hc <= (p_want[pdef_i] == W_WRITE) && (l_state == `PS_SHARED);
                    hq_rid <= p_rid[pdef_i]; hq_ret <= S_FLUSH;
                    state <= S_HREQ;
                end else state <= S_WBACK;
            end
            S_WBACK: begin
                if (c_loaded) begin
                    ram_we <= 1'b1; ram_waddr <= c_idx;
                    dir_wdata <= {d_queued, d_busy, d_excl, d_owner, d_sharers};
                    loc_wdata <= l_state;
                end
                state <= S_END;
            end
            S_END: if (a_ready) begin
                a_push <= 1'b1;
                a_act <= act(`A_END, 4'd0, 8'd0, 1'b0, 4'd0, c_rid, 2'd0)
                         | ({{(`ACT_W-8){1'b0}}, c_err} << 4);
                state <= S_IDLE;
            end
            default: state <= S_IDLE;
            endcase
        end
    end
endmodule
