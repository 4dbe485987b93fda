// cv_bram: a block RAM with one write port and two synchronous read ports (a true
// dual-port BRAM used as 1W + 2R: port A for the controller, port B for the host's
// debug/readout path). Reads have one cycle of latency, as in FPGA block RAM; the RAM has
// no reset (its contents are initialised through the write port during configuration).
module cv_bram #(
    parameter W = 8,          // bits per entry
    parameter DEPTH = 64,     // entries
    parameter AW = 6          // address bits, 2**AW >= DEPTH
) (
    input  wire          clk,
    // write port: we=1 writes wdata at waddr on the rising edge
    input  wire          we,
    input  wire [AW-1:0] waddr,
    input  wire [W-1:0]  wdata,
    // read port A: rdata_a is mem[raddr_a] one cycle after raddr_a is presented
    input  wire [AW-1:0] raddr_a,
    output reg  [W-1:0]  rdata_a,
    // read port B: same timing, independent address
    input  wire [AW-1:0] raddr_b,
    output reg  [W-1:0]  rdata_b
);
    reg [W-1:0] mem [0:DEPTH-1];

    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rdata_a <= mem[raddr_a];
        rdata_b <= mem[raddr_b];
    end
endmodule
