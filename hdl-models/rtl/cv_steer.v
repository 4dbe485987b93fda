// cv_steer: the interrupt steering table (stage 6).
//
// The host gives the NIC NVEC MSI-X vectors, each an eventfd that one host thread waits
// on; the table says which VP's thread listens on each vector (vector -> VP). A fault
// completion (A_FAULTDONE for VP v) raises the lowest vector whose entry is v, so the VP
// that asked wakes without a hop through another thread; a VP with no vector, and every
// mapping change (A_INSTALL, A_INVAL, A_DOWNGRADE, A_WAKE), uses cfg_map_vector (the
// host's fabric thread). When a VP is removed (two-phase reconfiguration, after the
// guest acknowledged), the host asks the table to hand that VP's vectors to another VP:
// the rewrite walks the table one entry per cycle and holds the pipeline meanwhile, so no
// completion is steered by a half-rewritten table.
`include "cv_defs.vh"
module cv_steer #(
    parameter NVEC = 16,     // MSI-X vectors
    parameter VW = 4         // vector index bits, 2**VW >= NVEC
) (
    input  wire              clk,
    input  wire              rst,
    input  wire [5:0]        cfg_map_vector,
    // ---- table write (host, while idle) ----
    input  wire              st_we,
    input  wire [VW-1:0]     st_vec,
    input  wire [5:0]        st_vp,
    input  wire              st_valid,
    // ---- VP removal: every entry of rm_vp becomes rm_to ----
    input  wire              rm_valid,
    output wire              rm_ready,
    input  wire [5:0]        rm_vp,
    input  wire [5:0]        rm_to,
    // ---- action records in (ready/valid) ----
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [`ACT_W-1:0] in_act,
    // ---- action records out, interrupt filled (ready/valid) ----
    output reg               out_valid,
    input  wire              out_ready,
    output reg [`ACT_W-1:0]  out_act
);
    reg [5:0]    t_vp    [0:NVEC-1];
    reg          t_valid [0:NVEC-1];
    reg          rm_busy;
    reg [VW:0]   rm_i;
    reg [5:0]    rm_from, rm_dest;

    assign rm_ready = !rm_busy;
    assign in_ready = (!out_valid || out_ready) && !rm_busy;

    wire [3:0] kind = in_act[`F_KIND];
    wire [5:0] vp = in_act[`F_VP];
    integer i;
    reg       hit;
    reg [5:0] hit_vec;
    always @* begin
        hit = 1'b0; hit_vec = 6'd0;
        for (i = NVEC - 1; i >= 0; i = i - 1)
            if (t_valid[i] && t_vp[i] == vp) begin hit = 1'b1; hit_vec = i[5:0]; end
    end
    wire mapping = (kind == `A_INSTALL) || (kind == `A_INVAL) || (kind == `A_DOWNGRADE)
                   || (kind == `A_WAKE);
    wire done = (kind == `A_FAULTDONE);

    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
            rm_busy <= 1'b0;
            for (i = 0; i < NVEC; i = i + 1) begin
                t_vp[i] <= 6'd0; t_valid[i] <= 1'b0;
            end
        end else begin
            if (st_we) begin
                t_vp[st_vec] <= st_vp; t_valid[st_vec] <= st_valid;
            end
            if (rm_busy) begin
                if (t_valid[rm_i[VW-1:0]] && t_vp[rm_i[VW-1:0]] == rm_from)
                    t_vp[rm_i[VW-1:0]] <= rm_dest;
                rm_i <= rm_i + 1'b1;
                if (rm_i == NVEC - 1) rm_busy <= 1'b0;
            end else if (rm_valid) begin
                rm_busy <= 1'b1; rm_i <= {(VW+1){1'b0}}; rm_from <= rm_vp; rm_dest <= rm_to;
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin
                out_act <= in_act;
                out_act[`F_IRQV] <= mapping || done;
                out_act[`F_VEC] <= (done && hit) ? hit_vec :
                                   (mapping || done) ? cfg_map_vector : 6'd0;
                out_valid <= 1'b1;
            end
        end
    end
endmodule
