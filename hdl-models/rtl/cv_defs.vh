// cv_defs.vh: numbers shared by every stage of the cvmm offload pipeline.
//
// Message kinds and flag bits are the wire ABI of vima::wire (docs/protocol.md); error
// codes mirror nic_firmware::engine::EngineError (1..15) and vima::wire::WireError
// (0x11..0x1c) so the differential test can compare them one to one.
//
// Every stage passes one *action record* (`ACT_W` bits) down the pipeline. The controller
// fills the first fields; later stages fill their annotation fields (DMA request, wire
// header, interrupt vector) and pass the record on, so the order of actions is kept end to
// end (the host's per-page ordering rule, docs/protocol.md "applying actions").

`ifndef CV_DEFS_VH
`define CV_DEFS_VH

// ---- wire message kinds (vima::wire::MessageKind) ----
`define K_READ_REQ      8'h01
`define K_WRITE_REQ     8'h02
`define K_FORWARD_READ  8'h03
`define K_FORWARD_WRITE 8'h04
`define K_INVALIDATE    8'h05
`define K_INV_ACK       8'h06
`define K_PAGE_DATA     8'h07
`define K_UPGRADE_GRANT 8'h08
`define K_WRITEBACK     8'h09
`define K_UNBLOCK       8'h0a
`define K_NACK          8'h0b
`define K_EVICT         8'h0c
`define K_EVICT_ACK     8'h0d
`define K_HOME_MOVE     8'h0e
`define K_IPI           8'h20
`define K_VP_START      8'h21
`define K_CONSOLE_LINE  8'h22
`define K_VS_EXIT       8'h23
`define K_HEARTBEAT     8'h24
`define K_CONFIG_UPDATE 8'h25
`define K_HOME_CHANGE   8'h26
`define K_HOME_CHG_ACK  8'h27

`define WIRE_MAGIC      16'h5643
`define WIRE_VERSION    8'd1
`define PAGE_BYTES      16'd4096

// ---- action kinds (controller -> pipeline -> host/wire) ----
`define A_END        4'd0   // end of one input; ERR holds the first error (0: accepted)
`define A_SEND       4'd1   // send a header-only (or forward) message: MSG, DST, RID, FLAG, REQ
`define A_SENDPAGE   4'd2   // DMA-read the page and send it: DST, RID, PSK
`define A_INSTALL    4'd3   // (DMA-write the received page if DATA) and map it as STATE
`define A_STORE      4'd4   // DMA-write the received page, no mapping (a writeback at the home)
`define A_INVAL      4'd5   // host: unmap the page
`define A_DOWNGRADE  4'd6   // host: write-protect the page
`define A_FAULTDONE  4'd7   // host: the fault of VP is resolved
`define A_WAKE       4'd8   // host: wake SpinWait watchers of the page
`define A_FANOUT     4'd9   // send Invalidate to every node of MASK (expanded by cv_fanout)

// page send kinds (nic_firmware::engine::PageSendKind)
`define PSK_SHARED    2'd0
`define PSK_EXCLUSIVE 2'd1
`define PSK_WRITEBACK 2'd2

// page states (nic_firmware::engine::PageState)
`define PS_INVALID   2'd0
`define PS_SHARED    2'd1
`define PS_EXCLUSIVE 2'd2

// ---- error codes ----
`define E_NONE            8'd0
`define E_WRONG_VS        8'd1
`define E_WRONG_DST       8'd2
`define E_BAD_SOURCE      8'd3
`define E_NOT_COHERENCE   8'd4
`define E_NOT_COHERENT    8'd5
`define E_UNKNOWN_PAGE    8'd6
`define E_NOT_HOME        8'd7
`define E_NOT_FROM_HOME   8'd8
`define E_UNEXPECTED      8'd9
`define E_BAD_VP          8'd10
`define E_PENDING_FULL    8'd11
`define E_STORAGE         8'd12
// wire decode errors (vima::wire::WireError), found by cv_parser
`define E_W_TRUNCATED     8'h11
`define E_W_BAD_MAGIC     8'h12
`define E_W_BAD_VERSION   8'h13
`define E_W_UNKNOWN_KIND  8'h14
`define E_W_BAD_LENGTH    8'h15
`define E_W_BAD_FLAGS     8'h16
`define E_W_BAD_RESERVED  8'h17
`define E_W_BAD_NODE      8'h18
`define E_W_BAD_PAGE      8'h19
`define E_W_BAD_VP        8'h1a
`define E_W_BAD_VECTOR    8'h1b

// ---- the action record ----
`define F_KIND   3:0      // A_*
`define F_ERR    11:4     // A_END: first error
`define F_PAGE   75:12    // logical page number
`define F_RID    139:76   // request id
`define F_DST    143:140  // destination node (SEND, SENDPAGE)
`define F_MSG    151:144  // message kind (SEND)
`define F_FLAG   152      // SEND: HAS_COPY of a WriteReq
`define F_REQ    156:153  // SEND ForwardRead/ForwardWrite: requester
`define F_VP     162:157  // FAULTDONE: VP
`define F_MASK   178:163  // FANOUT: nodes to invalidate
`define F_PSK    180:179  // SENDPAGE: PSK_*
`define F_STATE  182:181  // INSTALL: PS_SHARED / PS_EXCLUSIVE
`define F_DATA   183      // INSTALL: the page came with data (DMA write first)
// filled by cv_dma
`define F_DMAV   184      // a DMA request goes with this action
`define F_DMAW   185      // 1: write host memory, 0: read
`define F_DADDR  249:186  // host address (the DMA window)
`define F_DLEN   262:250  // bytes
// filled by cv_reply
`define F_TXV    263      // a wire message goes out with this action
`define F_H0     327:264  // header bytes 0..7 (little-endian)
`define F_H1     391:328  // header bytes 8..15
`define F_H2     455:392  // header bytes 16..23
`define F_H3     519:456  // header bytes 24..31
`define F_BODY   583:520  // first 8 body bytes (ForwardRead/ForwardWrite)
// filled by cv_steer
`define F_IRQV   584      // an MSI-X interrupt goes with this action
`define F_VEC    590:585  // its vector
`define ACT_W    591

`endif
