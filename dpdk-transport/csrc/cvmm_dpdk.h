/*
 * cvmm_dpdk: the small C surface of Debian's libdpdk that dpdk-transport uses.
 *
 * Why a shim: the receive/transmit bursts and the mbuf helpers are `static inline` in the
 * DPDK headers, so Rust cannot call them directly, and the EAL's quirks (it pins the calling
 * thread, logs to stdout) are easier to contain in C. Everything here is declared again,
 * by hand, in dpdk-transport/src/dpdk/sys.rs: keep the two in step.
 *
 * Conventions: functions return 0 (or a count) on success and a negative errno value on
 * failure. Mbufs are opaque to the caller (`void *`).
 */
#ifndef CVMM_DPDK_H
#define CVMM_DPDK_H

#include <stdint.h>
#include <stddef.h>

/* Initialises the EAL with `argv` (argv[0] is the program name). Logs go to stderr,
 * and the calling thread's CPU affinity is restored afterwards (the EAL pins its main
 * thread to one core, which would stack every process of a cluster on core 0).
 * Returns 0 or a negative errno value. */
int cvmm_dpdk_eal_init(int argc, char **argv);

/* A packet mbuf pool of `count` buffers with `data_room` bytes of data each (plus
 * headroom). NULL on failure, with *err set to a negative errno value. */
void *cvmm_dpdk_pool_create(const char *name, uint32_t count, uint16_t data_room, int *err);

/* Frees a pool whose mbufs are all back (every port using it closed). */
void cvmm_dpdk_pool_free(void *pool);

/* The port id of the device called `name` (a vdev name such as "net_memif0", or a PCI
 * address). */
int cvmm_dpdk_port_by_name(const char *name, uint16_t *port);

/* Configures one RX and one TX queue on `port`, receiving into `pool`, with an MTU of at
 * most `mtu`; turns promiscuous mode on where the driver has it. Writes the port's MAC
 * address to `mac` and the MTU in force to *mtu_out. */
int cvmm_dpdk_port_configure(uint16_t port, void *pool, uint16_t mtu, uint8_t mac[6],
			     uint16_t *mtu_out);

/* Starts the port. A memif client fails here while its server does not listen yet;
 * the caller retries. */
int cvmm_dpdk_port_start(uint16_t port);

/* Asks the EAL's interrupt thread to stop and start the port again if its link is
 * still down. memif handles its control channel in that thread, so a restart from any
 * other thread races with a handshake in progress (and crashed the EAL under load);
 * an alarm callback runs in that thread, serialised with memif's handlers. */
int cvmm_dpdk_port_restart_async(uint16_t port);

/* 1 when the link is up, 0 when down, negative on error. */
int cvmm_dpdk_link_up(uint16_t port);

/* Stops and closes the port. */
void cvmm_dpdk_port_close(uint16_t port);

/* Sends one frame made of `head` (head_len bytes) followed by `body` (body_len bytes),
 * copied into one mbuf of `pool`. Returns 1 when the driver took it, 0 when its queue
 * was full or no mbuf was free (the frame is dropped), negative on error (-EMSGSIZE:
 * larger than an mbuf). Not thread safe per port: the caller serialises. */
int cvmm_dpdk_tx(uint16_t port, void *pool, const void *head, uint32_t head_len,
		 const void *body, uint32_t body_len);

/* Receives up to `max` mbufs from the port into `mbufs`; returns how many. Not thread
 * safe per port: the caller serialises. */
uint16_t cvmm_dpdk_rx(uint16_t port, void **mbufs, uint16_t max);

/* The frame length of a received mbuf (all segments). */
uint32_t cvmm_dpdk_mbuf_len(const void *mbuf);

/* Copies up to `len` bytes starting at `offset` of the frame into `dst`, across segments;
 * returns the number copied. */
uint32_t cvmm_dpdk_mbuf_read(const void *mbuf, uint32_t offset, void *dst, uint32_t len);

/* Returns a received mbuf (and its chain) to its pool. */
void cvmm_dpdk_mbuf_free(void *mbuf);

/* Counters of the port as the driver keeps them. */
struct cvmm_dpdk_port_stats {
	uint64_t ipackets;
	uint64_t opackets;
	uint64_t imissed;
	uint64_t ierrors;
	uint64_t oerrors;
	uint64_t rx_nombuf;
};
int cvmm_dpdk_port_stats(uint16_t port, struct cvmm_dpdk_port_stats *out);

/* DPDK's text for a (positive) error number. */
const char *cvmm_dpdk_strerror(int errnum);

#endif
