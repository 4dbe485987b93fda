// cv_fifo: a synchronous FIFO between the controller and the action pipeline. `ready`
// keeps one entry of margin because the controller's push is registered (it decides one
// cycle before the entry lands).
module cv_fifo #(
    parameter W = 8,
    parameter DEPTH = 16,
    parameter AW = 4          // 2**AW == DEPTH
) (
    input  wire         clk,
    input  wire         rst,
    input  wire         push,      // writes din (must not be asserted when full)
    input  wire [W-1:0] din,
    output wire         ready,     // at least two entries free
    output wire         out_valid, // dout holds the oldest entry
    input  wire         out_ready, // the consumer takes it
    output wire [W-1:0] dout,
    output wire         empty
);
    reg [W-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] rd, wr;
    reg [AW:0]   count;
    wire pop = out_valid && out_ready;

    assign ready     = count < DEPTH - 1;
    assign out_valid = count != 0;
    assign empty     = count == 0;
    assign dout      = mem[rd];

    always @(posedge clk) begin
        if (rst) begin
            rd <= {AW{1'b0}};
            wr <= {AW{1'b0}};
            count <= {(AW+1){1'b0}};
        end else begin
            if (push) begin
                mem[wr] <= din;
                wr <= wr + 1'b1;
            end
            if (pop) rd <= rd + 1'b1;
            count <= count + {{AW{1'b0}}, push} - {{AW{1'b0}}, pop};
        end
    end
endmodule
