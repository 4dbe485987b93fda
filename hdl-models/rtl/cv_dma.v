// cv_dma: DMA request issue (stage 4).
//
// Annotates each record with the host-memory access it needs, in the DMA window (the
// second, unregistered mapping of the guest memfd; host address = window base + page *
// 4096): a page sent on the wire is read from host memory (A_SENDPAGE: the NIC serves
// remote reads without the host), a received page is written (A_INSTALL with data,
// A_STORE). The PCIe DMA engine behind this stage is outside the model; its latency is
// a parameter of the latency model (hdl_models::latency).
`include "cv_defs.vh"
module cv_dma (
    input  wire              clk,
    input  wire              rst,
    input  wire [63:0]       cfg_window_base,   // host address of logical page 0
    // ---- action records in (ready/valid) ----
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [`ACT_W-1:0] in_act,
    // ---- action records out, DMA fields filled (ready/valid) ----
    output reg               out_valid,
    input  wire              out_ready,
    output reg [`ACT_W-1:0]  out_act
);
    assign in_ready = !out_valid || out_ready;
    wire [3:0]  kind = in_act[`F_KIND];
    wire        read = (kind == `A_SENDPAGE);
    wire        write = (kind == `A_STORE) || (kind == `A_INSTALL && in_act[`F_DATA]);
    wire [63:0] addr = cfg_window_base + {in_act[63:12], 12'd0};

    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            if (in_valid && in_ready) begin
                out_act <= in_act;
                out_act[`F_DMAV] <= read || write;
                out_act[`F_DMAW] <= write;
                out_act[`F_DADDR] <= (read || write) ? addr : 64'd0;
                out_act[`F_DLEN] <= (read || write) ? 13'd4096 : 13'd0;
                out_valid <= 1'b1;
            end
        end
    end
endmodule
