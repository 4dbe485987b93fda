// cv_parser: the wire-message parser (stage 1).
//
// Takes one received frame as 256-bit beats (the 32-byte header is beat 0, the body
// follows) and hands the header fields to the coherence controller, after the checks
// vima::wire::decode makes, in the same order, with the same error (E_W_*): magic,
// version, kind, body length, flags, node ids, page, then the body of each kind (the
// forward body's requester and reserved bytes, the control bodies' VP, vector and reserved
// fields). A frame that fails is still consumed to its last beat and handed on with its
// error, so the controller reports it in the action stream (A_END) and the firmware can
// count it. The page payload of PageData/Writeback is absorbed here (the model does not
// carry its bytes; the DMA stage writes it from the receive buffer), one beat per cycle:
// a 4 KiB page costs 128 cycles of a 256-bit datapath.
`include "cv_defs.vh"
module cv_parser (
    input  wire         clk,
    input  wire         rst,
    // ---- receive stream from the MAC/transport (ready/valid) ----
    input  wire         rx_valid,
    output wire         rx_ready,
    input  wire [255:0] rx_data,   // beat: bytes 0..31 of the frame part, little-endian
    input  wire         rx_last,   // last beat of the frame
    input  wire [15:0]  rx_len,    // frame length in bytes, valid with the first beat
    // ---- parsed message to the controller (ready/valid) ----
    output reg          m_valid,
    input  wire         m_ready,
    output reg  [7:0]   m_err,     // E_W_* or 0
    output reg  [7:0]   m_kind,
    output reg  [15:0]  m_vs,
    output reg  [15:0]  m_flags,
    output reg  [3:0]   m_src,
    output reg  [3:0]   m_dst,
    output reg  [63:0]  m_page,
    output reg  [63:0]  m_rid,
    output reg  [3:0]   m_req      // ForwardRead/ForwardWrite: requester
);
    localparam S_HDR = 2'd0, S_BODY = 2'd1, S_SKIP = 2'd2, S_OUT = 2'd3;
    reg [1:0]   state;
    reg [255:0] hdr;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [255:0] body;       // first body beat (zero when the frame has no body)
    /* verilator lint_on UNUSEDSIGNAL */
    reg [15:0]  len;

    assign rx_ready = (state == S_HDR) || (state == S_BODY) || (state == S_SKIP);

    // ---- header fields ----
    wire [15:0] h_magic   = hdr[15:0];
    wire [7:0]  h_version = hdr[23:16];
    wire [7:0]  h_kind    = hdr[31:24];
    wire [15:0] h_vs      = hdr[47:32];
    wire [15:0] h_flags   = hdr[63:48];
    wire [15:0] h_src     = hdr[79:64];
    wire [15:0] h_dst     = hdr[95:80];
    wire [31:0] h_blen    = hdr[127:96];
    wire [63:0] h_page    = hdr[191:128];
    wire [63:0] h_rid     = hdr[255:192];
    wire [15:0] body_len  = len - 16'd32;

    reg known, coherence;
    reg [15:0] allowed_flags;
    always @* begin
        known = 1'b1;
        case (h_kind)
            `K_READ_REQ, `K_WRITE_REQ, `K_FORWARD_READ, `K_FORWARD_WRITE, `K_INVALIDATE,
            `K_INV_ACK, `K_PAGE_DATA, `K_UPGRADE_GRANT, `K_WRITEBACK, `K_UNBLOCK, `K_NACK,
            `K_EVICT, `K_EVICT_ACK, `K_HOME_MOVE, `K_HOME_CHANGE, `K_HOME_CHG_ACK, `K_IPI, `K_VP_START, `K_CONSOLE_LINE, `K_VS_EXIT, `K_HEARTBEAT,
            `K_CONFIG_UPDATE: known = 1'b1;
            default: known = 1'b0;
        endcase
        coherence = h_kind < 8'h20;
        allowed_flags = (h_kind == `K_WRITE_REQ || h_kind == `K_PAGE_DATA || h_kind == `K_EVICT)
                        ? 16'h0001 : (h_kind == `K_HOME_MOVE) ? 16'h0003 : 16'h0000;
    end

    // vima::wire::is_coherent_page: not the null page, not a per-node page (1..4), below
    // 64 GiB / 4 KiB.
    wire page_coherent = (h_page != 64'd0) && !(h_page >= 64'd1 && h_page <= 64'd4)
                         && (h_page < 64'h0100_0000);

    // ---- body fields (first body beat) ----
    wire [15:0] fw_req      = body[15:0];
    wire [47:0] fw_reserved = body[63:16];
    wire [31:0] b_vp        = body[31:0];
    wire [7:0]  ipi_vector  = body[39:32];
    wire [23:0] ipi_reserved = body[63:40];
    wire [31:0] vps_reserved = body[63:32];
    wire [31:0] cl_len      = body[63:32];
    // HomeMove: sharers, owner, reserved; HomeChange(Ack): first, count, home, reserved.
    wire [15:0] hm_sharers  = body[15:0];
    wire [15:0] hm_owner    = body[31:16];
    wire [31:0] hm_reserved = body[63:32];
    wire [63:0] hc_first    = body[63:0];
    wire [63:0] hc_count    = body[127:64];
    wire [15:0] hc_home     = body[143:128];
    wire [47:0] hc_reserved = body[191:144];
    wire [64:0] hc_end      = {1'b0, hc_first} + {1'b0, hc_count};

    reg [7:0] err;
    always @* begin
        err = `E_NONE;
        if (len < 16'd32)                         err = `E_W_TRUNCATED;
        else if (h_magic != `WIRE_MAGIC)          err = `E_W_BAD_MAGIC;
        else if (h_version != `WIRE_VERSION)      err = `E_W_BAD_VERSION;
        else if (!known)                          err = `E_W_UNKNOWN_KIND;
        else if (h_blen != {16'd0, body_len})     err = `E_W_BAD_LENGTH;
        else if ((h_flags & ~allowed_flags) != 0) err = `E_W_BAD_FLAGS;
        else if (h_src >= 16'd16 || h_dst >= 16'd16 || h_src == h_dst) err = `E_W_BAD_NODE;
        else if (coherence ? !page_coherent : (h_page != 64'd0)) err = `E_W_BAD_PAGE;
        else begin
            case (h_kind)
                `K_FORWARD_READ, `K_FORWARD_WRITE: begin
                    if (body_len != 16'd8)             err = `E_W_BAD_LENGTH;
                    else if (fw_reserved != 48'd0)     err = `E_W_BAD_RESERVED;
                    else if (fw_req >= 16'd16 || fw_req == h_dst) err = `E_W_BAD_NODE;
                end
                `K_PAGE_DATA, `K_WRITEBACK:
                    if (body_len != `PAGE_BYTES)       err = `E_W_BAD_LENGTH;
                // An Exclusive eviction (flag 0) carries the page; a Shared one nothing.
                `K_EVICT:
                    if (body_len != (h_flags[0] ? `PAGE_BYTES : 16'd0)) err = `E_W_BAD_LENGTH;
                // The entry (8 bytes), then the page with HAS_DATA (flag 1); Exclusive
                // (flag 0) names only an owner, Shared only sharers.
                `K_HOME_MOVE: begin
                    if (body_len != (h_flags[1] ? 16'd8 + `PAGE_BYTES : 16'd8)) err = `E_W_BAD_LENGTH;
                    else if (hm_reserved != 32'd0)     err = `E_W_BAD_RESERVED;
                    else if (h_flags[0] ? (hm_sharers != 16'd0) : (hm_owner != 16'd0))
                                                       err = `E_W_BAD_RESERVED;
                    else if (h_flags[0] && hm_owner >= 16'd16) err = `E_W_BAD_NODE;
                end
                `K_HOME_CHANGE, `K_HOME_CHG_ACK: begin
                    if (body_len != 16'd24)            err = `E_W_BAD_LENGTH;
                    else if (hc_reserved != 48'd0)     err = `E_W_BAD_RESERVED;
                    else if (hc_count == 64'd0 || hc_end > 65'h0_0100_0000) err = `E_W_BAD_PAGE;
                    else if (hc_home >= 16'd16)        err = `E_W_BAD_NODE;
                end
                `K_IPI: begin
                    if (body_len != 16'd8)             err = `E_W_BAD_LENGTH;
                    else if (ipi_reserved != 24'd0)    err = `E_W_BAD_RESERVED;
                    else if (ipi_vector < 8'd32 || ipi_vector >= 8'd64) err = `E_W_BAD_VECTOR;
                    else if (b_vp >= 32'd64)           err = `E_W_BAD_VP;
                end
                `K_VP_START: begin
                    if (body_len != 16'd32)            err = `E_W_BAD_LENGTH;
                    else if (vps_reserved != 32'd0)    err = `E_W_BAD_RESERVED;
                    else if (b_vp >= 32'd64)           err = `E_W_BAD_VP;
                end
                `K_CONSOLE_LINE: begin
                    if (body_len < 16'd8)              err = `E_W_BAD_LENGTH;
                    else if (cl_len != {16'd0, body_len - 16'd8} || body_len - 16'd8 > `PAGE_BYTES)
                                                       err = `E_W_BAD_LENGTH;
                    else if (b_vp >= 32'd64)           err = `E_W_BAD_VP;
                end
                `K_VS_EXIT, `K_HEARTBEAT:
                    if (body_len != 16'd8)             err = `E_W_BAD_LENGTH;
                `K_CONFIG_UPDATE:
                    if (body_len != 16'd16)            err = `E_W_BAD_LENGTH;
                default:
                    if (body_len != 16'd0)             err = `E_W_BAD_LENGTH;
            endcase
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            state   <= S_HDR;
            m_valid <= 1'b0;
            hdr     <= 256'd0;
            body    <= 256'd0;
            len     <= 16'd0;
        end else begin
            case (state)
                S_HDR: if (rx_valid) begin
                    hdr  <= rx_data;
                    len  <= rx_len;
                    body <= 256'd0;
                    state <= rx_last ? S_OUT : S_BODY;
                end
                S_BODY: if (rx_valid) begin
                    body  <= rx_data;
                    state <= rx_last ? S_OUT : S_SKIP;
                end
                S_SKIP: if (rx_valid && rx_last) state <= S_OUT;
                S_OUT: begin
                    if (!m_valid) begin
                        m_valid <= 1'b1;
                        m_err   <= err;
                        m_kind  <= h_kind;
                        m_vs    <= h_vs;
                        m_flags <= h_flags;
                        m_src   <= h_src[3:0];
                        m_dst   <= h_dst[3:0];
                        m_page  <= h_page;
                        m_rid   <= h_rid;
                        m_req   <= fw_req[3:0];
                    end else if (m_ready) begin
                        m_valid <= 1'b0;
                        state   <= S_HDR;
                    end
                end
                default: state <= S_HDR;
            endcase
        end
    end
endmodule
