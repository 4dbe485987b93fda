/*
 * cvmm_dpdk: see cvmm_dpdk.h for why this exists and its conventions.
 */
#define _GNU_SOURCE
#include "cvmm_dpdk.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <rte_alarm.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

static int neg_rte_errno(void)
{
	return rte_errno > 0 ? -rte_errno : -EINVAL;
}

static int neg(int ret)
{
	return ret < 0 ? ret : -ret;
}

int cvmm_dpdk_eal_init(int argc, char **argv)
{
	cpu_set_t before;
	int have_affinity =
		pthread_getaffinity_np(pthread_self(), sizeof(before), &before) == 0;

	/* The Linux EAL logs to stdout (and syslog) by default; stdout is the guest
	 * console of a cvmm node. */
	rte_openlog_stream(stderr);
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		return neg_rte_errno();
	if (have_affinity)
		(void)pthread_setaffinity_np(pthread_self(), sizeof(before), &before);
	return 0;
}

void *cvmm_dpdk_pool_create(const char *name, uint32_t count, uint16_t data_room, int *err)
{
	/* No per-lcore cache: the threads that send are not EAL lcores, so a cache would
	 * never be used. */
	struct rte_mempool *pool = rte_pktmbuf_pool_create(
		name, count, 0, 0, (uint16_t)(data_room + RTE_PKTMBUF_HEADROOM), SOCKET_ID_ANY);
	if (pool == NULL)
		*err = neg_rte_errno();
	return pool;
}

void cvmm_dpdk_pool_free(void *pool)
{
	rte_mempool_free((struct rte_mempool *)pool);
}

int cvmm_dpdk_port_by_name(const char *name, uint16_t *port)
{
	return neg(rte_eth_dev_get_port_by_name(name, port));
}

int cvmm_dpdk_port_configure(uint16_t port, void *pool, uint16_t mtu, uint8_t mac[6],
			     uint16_t *mtu_out)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	uint16_t nb_rx = 1024, nb_tx = 1024;
	int ret;

	ret = rte_eth_dev_info_get(port, &info);
	if (ret != 0)
		return neg(ret);
	memset(&conf, 0, sizeof(conf));
	if (info.max_rx_pktlen > 18 && mtu > info.max_rx_pktlen - 18) mtu = info.max_rx_pktlen - 18;
	if (mtu > info.max_mtu)
		mtu = info.max_mtu;
	if (mtu < info.min_mtu)
		mtu = info.min_mtu;
	conf.rxmode.mtu = mtu;
	ret = rte_eth_dev_configure(port, 1, 1, &conf);
	if (ret != 0)
		return neg(ret);
	ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rx, &nb_tx);
	if (ret != 0)
		return neg(ret);
	ret = rte_eth_rx_queue_setup(port, 0, nb_rx, rte_eth_dev_socket_id(port), NULL,
				     (struct rte_mempool *)pool);
	if (ret != 0)
		return neg(ret);
	ret = rte_eth_tx_queue_setup(port, 0, nb_tx, rte_eth_dev_socket_id(port), NULL);
	if (ret != 0)
		return neg(ret);
	/* Frames carry cvmm's own addresses, not the port's: accept them all and filter
	 * in software. Drivers without the notion (memif) answer -ENOTSUP. */
	(void)rte_eth_promiscuous_enable(port);
	struct rte_ether_addr addr;
	ret = rte_eth_macaddr_get(port, &addr);
	if (ret != 0)
		return neg(ret);
	memcpy(mac, addr.addr_bytes, 6);
	uint16_t in_force = mtu;
	if (rte_eth_dev_get_mtu(port, &in_force) != 0)
		in_force = mtu;
	*mtu_out = in_force;
	return 0;
}

int cvmm_dpdk_port_start(uint16_t port)
{
	return neg(rte_eth_dev_start(port));
}

static void restart_if_down(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	struct rte_eth_link link;
	if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP)
		return;
	/* Failures are seen by the caller as a link that stays down. */
	(void)rte_eth_dev_stop(port);
	(void)rte_eth_dev_start(port);
}

int cvmm_dpdk_port_restart_async(uint16_t port)
{
	return neg(rte_eal_alarm_set(1, restart_if_down, (void *)(uintptr_t)port));
}

int cvmm_dpdk_link_up(uint16_t port)
{
	struct rte_eth_link link;
	int ret = rte_eth_link_get_nowait(port, &link);
	if (ret != 0)
		return neg(ret);
	return link.link_status == RTE_ETH_LINK_UP ? 1 : 0;
}

void cvmm_dpdk_port_close(uint16_t port)
{
	/* Waits for a restart that is running, drops one that is pending. */
	(void)rte_eal_alarm_cancel(restart_if_down, (void *)(uintptr_t)port);
	(void)rte_eth_dev_stop(port);
	(void)rte_eth_dev_close(port);
}

int cvmm_dpdk_tx(uint16_t port, void *pool, const void *head, uint32_t head_len,
		 const void *body, uint32_t body_len)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc((struct rte_mempool *)pool);
	if (m == NULL)
		return 0;
	uint32_t total = head_len + body_len;
	if (total > rte_pktmbuf_tailroom(m) || total > UINT16_MAX) {
		rte_pktmbuf_free(m);
		return -EMSGSIZE;
	}
	char *data = rte_pktmbuf_append(m, (uint16_t)total);
	if (data == NULL) {
		rte_pktmbuf_free(m);
		return -EMSGSIZE;
	}
	memcpy(data, head, head_len);
	memcpy(data + head_len, body, body_len);
	/* A full queue is usually drained by the peer within microseconds: try a few
	 * times before dropping (the reliable layer resends what is dropped). */
	for (int attempt = 0; attempt < 8; attempt++) {
		if (rte_eth_tx_burst(port, 0, &m, 1) == 1)
			return 1;
		rte_pause();
	}
	rte_pktmbuf_free(m);
	return 0;
}

uint16_t cvmm_dpdk_rx(uint16_t port, void **mbufs, uint16_t max)
{
	return rte_eth_rx_burst(port, 0, (struct rte_mbuf **)mbufs, max);
}

uint32_t cvmm_dpdk_mbuf_len(const void *mbuf)
{
	return rte_pktmbuf_pkt_len((const struct rte_mbuf *)mbuf);
}

uint32_t cvmm_dpdk_mbuf_read(const void *mbuf, uint32_t offset, void *dst, uint32_t len)
{
	const struct rte_mbuf *m = (const struct rte_mbuf *)mbuf;
	uint32_t pkt_len = rte_pktmbuf_pkt_len(m);
	if (offset >= pkt_len)
		return 0;
	if (len > pkt_len - offset)
		len = pkt_len - offset;
	/* Copies into dst when the range spans segments; otherwise returns a pointer into
	 * the first one, which we copy ourselves. */
	const void *src = rte_pktmbuf_read(m, offset, len, dst);
	if (src == NULL)
		return 0;
	if (src != dst)
		memcpy(dst, src, len);
	return len;
}

void cvmm_dpdk_mbuf_free(void *mbuf)
{
	rte_pktmbuf_free((struct rte_mbuf *)mbuf);
}

int cvmm_dpdk_port_stats(uint16_t port, struct cvmm_dpdk_port_stats *out)
{
	struct rte_eth_stats stats;
	int ret = rte_eth_stats_get(port, &stats);
	if (ret != 0)
		return neg(ret);
	out->ipackets = stats.ipackets;
	out->opackets = stats.opackets;
	out->imissed = stats.imissed;
	out->ierrors = stats.ierrors;
	out->oerrors = stats.oerrors;
	out->rx_nombuf = stats.rx_nombuf;
	return 0;
}

const char *cvmm_dpdk_strerror(int errnum)
{
	return rte_strerror(errnum);
}
