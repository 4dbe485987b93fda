// cv_top: the cvmm FPGA offload pipeline for one node and one virtual server.
//
//   rx beats -> cv_parser -> cv_coherence -> cv_fifo -> cv_fanout -> cv_dma -> cv_reply
//   host fault descriptors --^   (directory,                (Invalidate    (DMA     (wire
//                                 request records,           fan-out, ack   request)  header)
//                                 pending faults)            counter)
//                                                     -> cv_steer -> action out
//                                                        (MSI-X vector)
//
// One clock, ready/valid between every stage. Each action record that leaves carries
// everything the NIC does for it: a wire message (header words), a DMA request, an
// interrupt vector; and one A_END record closes each input with its error code. The
// The simulation shim (sim/shim.cpp) drives these ports; docs/hdl.md describes the design.
`include "cv_defs.vh"
module cv_top #(
    parameter NPAGES = 64,
    parameter IDXW   = 6,
    parameter NREQ   = 16,
    parameter RW     = 4,
    parameter NPEND  = 4,
    parameter PW     = 2,
    parameter NVEC   = 16,
    parameter VW     = 4
) (
    input  wire         clk,
    input  wire         rst,
    // ---- configuration ----
    input  wire [3:0]   cfg_node,
    input  wire [4:0]   cfg_node_count,
    input  wire [15:0]  cfg_vs_id,
    input  wire [63:0]  cfg_page_base,
    input  wire [63:0]  cfg_window_base,
    input  wire [RW:0]  cfg_nreq,
    input  wire [PW:0]  cfg_npend,
    input  wire [5:0]   cfg_map_vector,
    input  wire         home_we,
    input  wire [IDXW-1:0] home_widx,
    input  wire [3:0]   home_wnode,
    input  wire         home_wvalid,
    input  wire         st_we,
    input  wire [VW-1:0] st_vec,
    input  wire [5:0]   st_vp,
    input  wire         st_valid,
    input  wire         rm_valid,
    output wire         rm_ready,
    input  wire [5:0]   rm_vp,
    input  wire [5:0]   rm_to,
    // ---- receive stream (wire -> NIC) ----
    input  wire         rx_valid,
    output wire         rx_ready,
    input  wire [255:0] rx_data,
    input  wire         rx_last,
    input  wire [15:0]  rx_len,
    // ---- local faults (host fetch-descriptor ring -> NIC) ----
    input  wire         f_valid,
    output wire         f_ready,
    input  wire [63:0]  f_page,
    input  wire         f_write,
    input  wire [31:0]  f_vp,
    // ---- actions (NIC -> wire, DMA engine, MSI-X) ----
    output wire         out_valid,
    input  wire         out_ready,
    output wire [3:0]   out_kind,
    output wire [7:0]   out_err,
    output wire [63:0]  out_page,
    output wire [1:0]   out_state,
    output wire         out_data,
    output wire [5:0]   out_vp,
    output wire         out_dmav,
    output wire         out_dmaw,
    output wire [63:0]  out_daddr,
    output wire [12:0]  out_dlen,
    output wire         out_txv,
    output wire [63:0]  out_h0,
    output wire [63:0]  out_h1,
    output wire [63:0]  out_h2,
    output wire [63:0]  out_h3,
    output wire [63:0]  out_body,
    output wire         out_irqv,
    output wire [5:0]   out_vec,
    // ---- readout ----
    input  wire [IDXW-1:0] dbg_idx,
    output wire [22:0]  dbg_dir,
    output wire [1:0]   dbg_local,
    output wire [4:0]   dbg_home,
    output wire         ctl_idle,
    output wire         any_pending,
    output wire         any_record,
    output reg  [63:0]  stat_cycles,      // cycles since reset
    output reg  [63:0]  stat_busy_cycles  // cycles the controller worked on an input
);
    wire        m_valid, m_ready;
    wire [7:0]  m_err, m_kind;
    wire [15:0] m_vs, m_flags;
    wire [3:0]  m_src, m_dst, m_req;
    wire [63:0] m_page, m_rid;

    cv_parser parser (
        .clk(clk), .rst(rst),
        .rx_valid(rx_valid), .rx_ready(rx_ready), .rx_data(rx_data), .rx_last(rx_last),
        .rx_len(rx_len),
        .m_valid(m_valid), .m_ready(m_ready), .m_err(m_err), .m_kind(m_kind), .m_vs(m_vs),
        .m_flags(m_flags), .m_src(m_src), .m_dst(m_dst), .m_page(m_page), .m_rid(m_rid),
        .m_req(m_req));

    wire              a_push, a_ready;
    wire [`ACT_W-1:0] a_act;
    wire              ack_arm, ack_chk, ack_ok, ack_last;
    wire [15:0]       ack_arm_mask;
    wire [3:0]        ack_src;
    wire [IDXW-1:0]   ack_idx;

    cv_coherence #(.NPAGES(NPAGES), .IDXW(IDXW), .NREQ(NREQ), .RW(RW), .NPEND(NPEND),
                   .PW(PW)) coherence (
        .clk(clk), .rst(rst),
        .cfg_node(cfg_node), .cfg_node_count(cfg_node_count), .cfg_vs_id(cfg_vs_id),
        .cfg_page_base(cfg_page_base), .cfg_nreq(cfg_nreq), .cfg_npend(cfg_npend),
        .home_we(home_we), .home_widx(home_widx), .home_wnode(home_wnode),
        .home_wvalid(home_wvalid),
        .m_valid(m_valid), .m_ready(m_ready), .m_err(m_err), .m_kind(m_kind), .m_vs(m_vs),
        .m_flags(m_flags), .m_src(m_src), .m_dst(m_dst), .m_page(m_page), .m_rid(m_rid),
        .m_req(m_req),
        .f_valid(f_valid), .f_ready(f_ready), .f_page(f_page), .f_write(f_write),
        .f_vp(f_vp),
        .a_push(a_push), .a_ready(a_ready), .a_act(a_act),
        .ack_arm(ack_arm), .ack_arm_mask(ack_arm_mask), .ack_chk(ack_chk),
        .ack_src(ack_src), .ack_idx(ack_idx), .ack_ok(ack_ok), .ack_last(ack_last),
        .dbg_idx(dbg_idx), .dbg_dir(dbg_dir), .dbg_local(dbg_local), .dbg_home(dbg_home),
        .idle(ctl_idle), .any_pending(any_pending), .any_record(any_record));

    wire              q_valid, q_ready;
    /* verilator lint_off UNUSEDSIGNAL */
    wire              q_empty;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [`ACT_W-1:0] q_act;
    cv_fifo #(.W(`ACT_W), .DEPTH(16), .AW(4)) queue (
        .clk(clk), .rst(rst), .push(a_push), .din(a_act), .ready(a_ready),
        .out_valid(q_valid), .out_ready(q_ready), .dout(q_act), .empty(q_empty));

    wire              f2_valid, f2_ready;
    wire [`ACT_W-1:0] f2_act;
    cv_fanout #(.NPAGES(NPAGES), .IDXW(IDXW)) fanout (
        .clk(clk), .rst(rst),
        .in_valid(q_valid), .in_ready(q_ready), .in_act(q_act),
        .out_valid(f2_valid), .out_ready(f2_ready), .out_act(f2_act),
        .arm(ack_arm), .arm_mask(ack_arm_mask), .chk(ack_chk), .chk_src(ack_src),
        .idx(ack_idx), .chk_ok(ack_ok), .chk_last(ack_last));

    wire              d_valid, d_ready;
    wire [`ACT_W-1:0] d_act;
    cv_dma dma (
        .clk(clk), .rst(rst), .cfg_window_base(cfg_window_base),
        .in_valid(f2_valid), .in_ready(f2_ready), .in_act(f2_act),
        .out_valid(d_valid), .out_ready(d_ready), .out_act(d_act));

    wire              r_valid, r_ready;
    wire [`ACT_W-1:0] r_act;
    cv_reply reply (
        .clk(clk), .rst(rst), .cfg_node(cfg_node), .cfg_vs_id(cfg_vs_id),
        .in_valid(d_valid), .in_ready(d_ready), .in_act(d_act),
        .out_valid(r_valid), .out_ready(r_ready), .out_act(r_act));

    // the request id, destination and message kind of a send travel in the header words
    /* verilator lint_off UNUSEDSIGNAL */
    wire [`ACT_W-1:0] s_act;
    /* verilator lint_on UNUSEDSIGNAL */
    cv_steer #(.NVEC(NVEC), .VW(VW)) steer (
        .clk(clk), .rst(rst), .cfg_map_vector(cfg_map_vector),
        .st_we(st_we), .st_vec(st_vec), .st_vp(st_vp), .st_valid(st_valid),
        .rm_valid(rm_valid), .rm_ready(rm_ready), .rm_vp(rm_vp), .rm_to(rm_to),
        .in_valid(r_valid), .in_ready(r_ready), .in_act(r_act),
        .out_valid(out_valid), .out_ready(out_ready), .out_act(s_act));

    assign out_kind  = s_act[`F_KIND];
    assign out_err   = s_act[`F_ERR];
    assign out_page  = s_act[`F_PAGE];
    assign out_state = s_act[`F_STATE];
    assign out_data  = s_act[`F_DATA];
    assign out_vp    = s_act[`F_VP];
    assign out_dmav  = s_act[`F_DMAV];
    assign out_dmaw  = s_act[`F_DMAW];
    assign out_daddr = s_act[`F_DADDR];
    assign out_dlen  = s_act[`F_DLEN];
    assign out_txv   = s_act[`F_TXV];
    assign out_h0    = s_act[`F_H0];
    assign out_h1    = s_act[`F_H1];
    assign out_h2    = s_act[`F_H2];
    assign out_h3    = s_act[`F_H3];
    assign out_body  = s_act[`F_BODY];
    assign out_irqv  = s_act[`F_IRQV];
    assign out_vec   = s_act[`F_VEC];

    always @(posedge clk) begin
        if (rst) begin
            stat_cycles <= 64'd0;
            stat_busy_cycles <= 64'd0;
        end else begin
            stat_cycles <= stat_cycles + 64'd1;
            if (!ctl_idle) stat_busy_cycles <= stat_busy_cycles + 64'd1;
        end
    end
endmodule
