// cv_fanout: invalidation fan-out and the per-page ack counter (stage 3).
//
// An A_FANOUT record (a write to a page others share) becomes one A_SEND Invalidate per
// node of its mask, lowest node first, one per cycle: every invalidation is on the wire
// before any ack can come back (docs/protocol.md, "send Invalidate to every node of S at
// once"). Other records pass through unchanged, in order.
//
// The ack counter holds, per page, the nodes whose InvalidateAck is still missing and how
// many: the controller arms it when it emits the fan-out and asks it about each ack
// (ok: that node was expected; last: it was the final one, grant now).
`include "cv_defs.vh"
module cv_fanout #(
    parameter NPAGES = 64,
    parameter IDXW = 6
) (
    input  wire              clk,
    input  wire              rst,
    // ---- action records in (ready/valid) ----
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [`ACT_W-1:0] in_act,
    // ---- action records out (ready/valid) ----
    output reg               out_valid,
    input  wire              out_ready,
    output reg [`ACT_W-1:0]  out_act,
    // ---- ack counter port (from cv_coherence) ----
    input  wire              arm,        // count acks of arm_mask for page idx
    input  wire [15:0]       arm_mask,
    input  wire              chk,        // an ack from chk_src for page idx
    input  wire [3:0]        chk_src,
    input  wire [IDXW-1:0]   idx,
    output reg               chk_ok,     // (next cycle) chk_src was awaited
    output reg               chk_last    // (next cycle) and no ack is missing now
);
    reg [15:0] ack_mask [0:NPAGES-1];
    reg [4:0]  ack_count [0:NPAGES-1];

    reg               fo_busy;
    reg [15:0]        fo_mask;
    reg [`ACT_W-1:0]  fo_act;

    wire out_free = !out_valid || out_ready;
    assign in_ready = out_free && !fo_busy;

    integer i;
    reg [3:0] fo_node;
    always @* begin
        fo_node = 4'd0;
        for (i = 15; i >= 0; i = i - 1)
            if (fo_mask[i]) fo_node = i[3:0];
    end

    function [4:0] popcount16;
        input [15:0] m;
        integer k;
        begin
            popcount16 = 5'd0;
            for (k = 0; k < 16; k = k + 1) popcount16 = popcount16 + {4'd0, m[k]};
        end
    endfunction

    wire [15:0] chk_bit = 16'd1 << chk_src;

    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
            fo_busy <= 1'b0;
            fo_mask <= 16'd0;
            chk_ok <= 1'b0;
            chk_last <= 1'b0;
            for (i = 0; i < NPAGES; i = i + 1) begin
                ack_mask[i] <= 16'd0;
                ack_count[i] <= 5'd0;
            end
        end else begin
            // ---- ack counter ----
            if (arm) begin
                ack_mask[idx] <= arm_mask;
                ack_count[idx] <= popcount16(arm_mask);
            end
            if (chk) begin
                chk_ok <= (ack_mask[idx] & chk_bit) != 16'd0;
                chk_last <= ((ack_mask[idx] & chk_bit) != 16'd0) && ack_count[idx] == 5'd1;
                if ((ack_mask[idx] & chk_bit) != 16'd0) begin
                    ack_mask[idx] <= ack_mask[idx] & ~chk_bit;
                    ack_count[idx] <= ack_count[idx] - 5'd1;
                end
            end
            // ---- fan-out ----
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (fo_busy) begin
                if (out_free) begin
                    out_act <= fo_act;
                    out_act[`F_KIND] <= `A_SEND;
                    out_act[`F_MSG] <= `K_INVALIDATE;
                    out_act[`F_DST] <= fo_node;
                    out_act[`F_MASK] <= 16'd0;
                    out_valid <= 1'b1;
                    fo_mask <= fo_mask & ~(16'd1 << fo_node);
                    if ((fo_mask & ~(16'd1 << fo_node)) == 16'd0) fo_busy <= 1'b0;
                end
            end else if (in_valid && in_ready) begin
                if (in_act[`F_KIND] == `A_FANOUT) begin
                    fo_busy <= in_act[`F_MASK] != 16'd0;
                    fo_mask <= in_act[`F_MASK];
                    fo_act <= in_act;
                end else begin
                    out_act <= in_act;
                    out_valid <= 1'b1;
                end
            end
        end
    end
endmodule
