// cv_reply: the reply builder (stage 5).
//
// Builds the 32-byte wire header (vima::wire::WireHeader, little-endian) of every message
// the node sends (A_SEND) and of every page it sends (A_SENDPAGE: PageData Shared or
// Exclusive, or Writeback, 4096 body bytes that the DMA read supplies), plus the 8-byte
// forward body (requester). The source, virtual server, magic and version come from the
// configuration; the request id is the requester's, copied through.
`include "cv_defs.vh"
module cv_reply (
    input  wire              clk,
    input  wire              rst,
    input  wire [3:0]        cfg_node,
    input  wire [15:0]       cfg_vs_id,
    // ---- action records in (ready/valid) ----
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [`ACT_W-1:0] in_act,
    // ---- action records out, header filled (ready/valid) ----
    output reg               out_valid,
    input  wire              out_ready,
    output reg [`ACT_W-1:0]  out_act
);
    assign in_ready = !out_valid || out_ready;
    wire [3:0] kind = in_act[`F_KIND];
    wire       send = (kind == `A_SEND);
    wire       page = (kind == `A_SENDPAGE);
    wire [1:0] psk  = in_act[`F_PSK];
    wire [7:0] msg  = page ? (psk == `PSK_WRITEBACK ? `K_WRITEBACK : `K_PAGE_DATA)
                           : in_act[`F_MSG];
    wire       fwd  = send && (msg == `K_FORWARD_READ || msg == `K_FORWARD_WRITE);
    wire [15:0] flags = (send && msg == `K_WRITE_REQ && in_act[`F_FLAG]) ? 16'd1 :
                        (page && psk == `PSK_EXCLUSIVE) ? 16'd1 : 16'd0;
    wire [31:0] body_len = page ? 32'd4096 : fwd ? 32'd8 : 32'd0;

    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin
                out_act <= in_act;
                out_act[`F_TXV] <= send || page;
                out_act[`F_H0] <= (send || page) ?
                    {flags, cfg_vs_id, msg, `WIRE_VERSION, `WIRE_MAGIC} : 64'd0;
                out_act[`F_H1] <= (send || page) ?
                    {body_len, 12'd0, in_act[`F_DST], 12'd0, cfg_node} : 64'd0;
                out_act[`F_H2] <= (send || page) ? in_act[`F_PAGE] : 64'd0;
                out_act[`F_H3] <= (send || page) ? in_act[`F_RID] : 64'd0;
                out_act[`F_BODY] <= fwd ? {60'd0, in_act[`F_REQ]} : 64'd0;
                out_valid <= 1'b1;
            end
        end
    end
endmodule
