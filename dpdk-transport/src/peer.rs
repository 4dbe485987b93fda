//! The reliability protocol for one peer, as a state machine without I/O or clocks.
//!
//! [`PeerLink`] is fed packets and timer ticks with an explicit `now`, and produces
//! datagrams through a sink and messages through a callback. All the protocol rules
//! (sequence numbers, cumulative and selective acks, delayed acks, retransmission timers,
//! heartbeats, the silence that declares a peer dead) live here, so they are unit-tested
//! step by step with made-up instants; the transport only adds locking, sockets and a
//! driver thread around it.
//!
//! Replays (issue 6). The MAC proves a packet was made by a node holding the cluster key,
//! not that it is new; this module makes sure an authenticated packet is acted on at most
//! once:
//! - **Sessions are confirmed, not trusted.** Every packet carries the sender's session
//!   (random per link incarnation) and `echo`, the receiver's session as the sender knows
//!   it. A packet is processed only if its `echo` is this link's own session, which is
//!   new in this run: so it was made after the peer heard from *this* incarnation, and no
//!   packet captured in an earlier run (under the same key) can open or feed the link.
//!   The first such packet fixes the peer's session; packets of any other session are
//!   dropped. Until then a node answers each unconfirmed packet with an ack that echoes
//!   the session it carried (one round trip), and data sent before the handshake is sent
//!   again as soon as it completes.
//! - **Sequence numbers never wrap.** Data sequence numbers are compared without
//!   wrapping; a link that used them all up is declared dead instead of reusing one
//!   (2^32 messages: days at this machine's rates). A replayed data packet is below the
//!   next expected number or already buffered: a duplicate, dropped (and acked, as any
//!   duplicate is, towards the peer's real address).
//! - **Control packets count too.** Ack and heartbeat packets carry their own increasing
//!   counter in `seq`; one not newer than the last accepted is dropped whole. So a
//!   replayed heartbeat cannot keep a dead peer alive, and liveness is refreshed only by
//!   something new: new data, a new control packet, or an ack that opens the window.
//! - Ack fields are monotone: an old ack changes nothing, so a replay that passes the
//!   checks above (a duplicate data packet) still does nothing twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::auth::Authenticator;
use crate::payload::Payload;
use crate::wire::{self, Header, PacketKind, WireError, HEADER_LEN, MAX_TAG, SACK_BITS};

/// Most data packets a receiver buffers ahead of the next one it expects; also the
/// largest send window.
pub const MAX_WINDOW: u32 = 1024;

/// Tuning of the protocol, already converted to durations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkParams {
    pub(crate) window: u32,
    pub(crate) initial_rto: Duration,
    pub(crate) min_rto: Duration,
    pub(crate) max_rto: Duration,
    pub(crate) delayed_ack: Duration,
    pub(crate) ack_every: u32,
    pub(crate) fast_retransmit_sacks: u32,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) dead_after: Duration,
    /// Data and control packets a session may number (sequence numbers never wrap).
    pub(crate) seq_limit: u32,
}

/// Sequence numbers a session may use: all of `u32` but the last (see the module doc).
pub(crate) const SEQ_LIMIT: u32 = u32::MAX;

/// Who is sending: the fields every header of this node carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Identity<'a> {
    pub(crate) cluster: u32,
    pub(crate) local: u32,
    pub(crate) auth: &'a dyn Authenticator,
}

/// Per-peer counters; also the serialised statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Data packets sent for the first time (= messages sent).
    pub sent: u64,
    /// Messages delivered to the application.
    pub received: u64,
    /// Data packets sent again (timeouts and fast retransmissions).
    pub retransmits: u64,
    /// Of those, sent again early because later packets were selectively acked.
    pub fast_retransmits: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
    /// Data packets received again and dropped.
    pub duplicates_dropped: u64,
    /// Data packets that arrived ahead of a gap and waited in the reorder buffer.
    pub out_of_order_buffered: u64,
    /// Data packets too far ahead of the next expected one, dropped.
    pub beyond_window_dropped: u64,
    /// Ack-only packets sent.
    pub acks_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Packets from an earlier incarnation of the peer, dropped.
    pub stale_session_dropped: u64,
    /// Packets whose ack claimed data never sent (ack fields ignored).
    pub bad_acks: u64,
    /// Datagrams the backend refused to send (counted as lost, resent later).
    pub send_errors: u64,
    /// Packets received after the peer was declared dead, dropped.
    pub after_death_dropped: u64,
    /// Authenticated packets that did not echo this link's session (sent before the peer
    /// heard it, or replayed from an earlier run), dropped.
    pub unconfirmed_dropped: u64,
    /// Ack and heartbeat packets not newer than one already accepted (reordered or
    /// replayed), dropped.
    pub stale_control_dropped: u64,
    /// Data packets sent again because the session handshake completed after they left.
    pub handshake_resends: u64,
    /// 1 when the link used up its sequence numbers and was closed.
    pub sequence_exhausted: u64,
}

#[derive(Debug)]
struct InFlight {
    packet: Vec<u8>,
    first_sent: Instant,
    /// When the latest copy was sent.
    last_sent: Instant,
    deadline: Instant,
    retransmitted: bool,
    sacked: bool,
    fast_retransmitted: bool,
    /// The `echo` its latest copy carried.
    echo: u32,
}

/// What a timer tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TickOutcome {
    /// Nothing the transport must act on.
    Quiet,
    /// The peer has just been declared dead.
    Died,
}

/// What taking in a data packet did.
#[derive(Clone, Copy, Debug)]
struct DataOutcome {
    /// An ack is owed now (a gap, a duplicate, or enough packets).
    ack_now: bool,
    /// The packet was new (delivered or buffered), not a duplicate.
    new: bool,
}

/// What handling a packet did, beyond delivering messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PacketOutcome {
    /// The send window opened (senders may be waiting).
    pub(crate) window_opened: bool,
}

/// The protocol state towards one peer.
#[derive(Debug)]
pub(crate) struct PeerLink {
    params: LinkParams,
    /// This link's incarnation: the `session` of every packet it sends.
    session: u32,
    // Sending side.
    snd_una: u32,
    in_flight: VecDeque<InFlight>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
    last_sent: Instant,
    /// Control packets (acks, heartbeats) sent: the `seq` of the next one.
    ctl_seq: u32,
    // Receiving side.
    /// The peer's session, once a packet echoing ours confirmed it.
    peer_session: Option<u32>,
    /// Before that: the session of the latest unconfirmed packet, echoed back.
    heard_session: Option<u32>,
    /// The newest control counter accepted from the peer.
    peer_ctl_seen: Option<u32>,
    rcv_next: u32,
    /// Index `i` holds sequence `rcv_next + i`; index 0 is always empty.
    reorder: VecDeque<Option<Payload>>,
    ack_due: Option<Instant>,
    unacked_received: u32,
    last_heard: Instant,
    dead: bool,
    pub(crate) counters: PeerCounters,
}

/// Signs a packet in place: the tag occupies its last `tag_len` bytes.
fn sign(identity: &Identity<'_>, packet: &mut [u8]) {
    let tag_len = identity.auth.tag_len();
    let body = packet.len() - tag_len;
    let (authenticated, tag) = packet.split_at_mut(body);
    identity.auth.sign(authenticated, tag);
}

impl PeerLink {
    pub(crate) fn new(params: LinkParams, session: u32, now: Instant) -> Self {
        Self {
            params,
            // 0 in `echo` means "not heard yet": never a session.
            session: session.max(1),
            snd_una: 0,
            in_flight: VecDeque::new(),
            srtt: None,
            rttvar: Duration::ZERO,
            rto: params.initial_rto,
            backoff: 1,
            last_sent: now,
            ctl_seq: 0,
            peer_session: None,
            heard_session: None,
            peer_ctl_seen: None,
            rcv_next: 0,
            reorder: VecDeque::new(),
            ack_due: None,
            unacked_received: 0,
            last_heard: now,
            dead: false,
            counters: PeerCounters::default(),
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead
    }

    /// Declares the peer dead: nothing more is sent to it or accepted from it, and what
    /// was in flight or buffered is discarded.
    pub(crate) fn kill(&mut self) {
        self.dead = true;
        self.in_flight.clear();
        self.reorder.clear();
        self.ack_due = None;
    }

    pub(crate) fn can_send(&self) -> bool {
        self.in_flight.len() < self.params.window as usize
            && self.next_seq() < self.params.seq_limit
    }

    /// True when the link cannot number another packet and has nothing left to deliver.
    fn exhausted(&self) -> bool {
        (self.next_seq() >= self.params.seq_limit && self.in_flight.is_empty())
            || self.ctl_seq >= self.params.seq_limit
    }

    /// What this node puts in `echo`: the peer's session as far as it knows.
    fn echo(&self) -> u32 {
        self.peer_session.or(self.heard_session).unwrap_or(0)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn session(&self) -> u32 {
        self.session
    }

    pub(crate) fn peer_session(&self) -> Option<u32> {
        self.peer_session
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The retransmission timeout now in force (with backoff).
    pub(crate) fn current_rto(&self) -> Duration {
        self.rto
            .saturating_mul(self.backoff)
            .min(self.params.max_rto)
    }

    fn next_seq(&self) -> u32 {
        // The window is at most MAX_WINDOW and sequence numbers stop at seq_limit, so
        // this neither truncates nor overflows.
        self.snd_una
            .saturating_add(u32::try_from(self.in_flight.len()).unwrap_or(u32::MAX))
    }

    fn sack_bits(&self) -> u64 {
        let mut bits = 0u64;
        for i in 0..SACK_BITS as usize {
            if matches!(self.reorder.get(i + 1), Some(Some(_))) {
                bits |= 1 << i;
            }
        }
        bits
    }

    fn header(&self, identity: &Identity<'_>, dst: u32, kind: PacketKind, len: usize) -> Header {
        Header {
            kind,
            flags: 0,
            tag_len: u8::try_from(identity.auth.tag_len()).unwrap_or(u8::MAX),
            cluster: identity.cluster,
            src: identity.local,
            dst,
            session: self.session,
            seq: match kind {
                PacketKind::Data => self.next_seq(),
                PacketKind::Ack | PacketKind::Heartbeat => self.ctl_seq,
            },
            ack: self.rcv_next,
            sack: self.sack_bits(),
            payload_len: u16::try_from(len).unwrap_or(u16::MAX),
            echo: self.echo(),
        }
    }

    /// Everything sent carries the latest ack: no separate ack is owed after it.
    fn note_sent(&mut self, now: Instant) {
        self.last_sent = now;
        self.ack_due = None;
        self.unacked_received = 0;
    }

    fn transmit(&mut self, packet: &[u8], out: &mut dyn FnMut(&[u8]) -> bool) {
        if !out(packet) {
            self.counters.send_errors += 1;
        }
    }

    /// Sends `payload` as the next data packet. The caller checked [`Self::can_send`].
    pub(crate) fn send_data(
        &mut self,
        identity: &Identity<'_>,
        dst: u32,
        payload: &[u8],
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), WireError> {
        let header = self.header(identity, dst, PacketKind::Data, payload.len());
        let mut packet = wire::encode_to_vec(&header, payload)?;
        sign(identity, &mut packet);
        self.transmit(&packet, out);
        self.in_flight.push_back(InFlight {
            packet,
            first_sent: now,
            last_sent: now,
            deadline: now + self.current_rto(),
            retransmitted: false,
            sacked: false,
            fast_retransmitted: false,
            echo: header.echo,
        });
        self.counters.sent += 1;
        self.note_sent(now);
        Ok(())
    }

    fn send_control(
        &mut self,
        identity: &Identity<'_>,
        dst: u32,
        kind: PacketKind,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) {
        if self.ctl_seq >= self.params.seq_limit {
            // Out of numbers: the next tick closes the link.
            return;
        }
        let header = self.header(identity, dst, kind, 0);
        self.ctl_seq += 1;
        let mut buf = [0u8; HEADER_LEN + MAX_TAG];
        let Ok(len) = wire::encode(&header, &[], &mut buf) else {
            // Only an authenticator with an oversized tag gets here; nothing can be sent.
            self.counters.send_errors += 1;
            return;
        };
        sign(identity, &mut buf[..len]);
        self.transmit(&buf[..len], out);
        match kind {
            PacketKind::Heartbeat => self.counters.heartbeats_sent += 1,
            _ => self.counters.acks_sent += 1,
        }
        self.note_sent(now);
    }

    fn retransmit(
        &mut self,
        identity: &Identity<'_>,
        index: usize,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) {
        let (ack, sack, rto) = (self.rcv_next, self.sack_bits(), self.current_rto());
        let echo = self.echo();
        let slot = &mut self.in_flight[index];
        wire::write_ack_fields(&mut slot.packet, ack, sack, echo);
        slot.echo = echo;
        sign(identity, &mut slot.packet);
        slot.retransmitted = true;
        slot.last_sent = now;
        slot.deadline = now + rto;
        if !out(&slot.packet) {
            self.counters.send_errors += 1;
        }
        self.counters.retransmits += 1;
        self.note_sent(now);
    }

    fn rtt_sample(&mut self, sample: Duration) {
        // RFC 6298, with the clock granularity term folded into min_rto.
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(sample);
        self.rto = (srtt + self.rttvar * 4).clamp(self.params.min_rto, self.params.max_rto);
    }

    /// Applies the ack fields of any packet from the peer.
    fn on_ack(
        &mut self,
        identity: &Identity<'_>,
        ack: u32,
        sack: u64,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> bool {
        if ack < self.snd_una {
            // An old ack overtaken by a newer one (or replayed): nothing new in it.
            return false;
        }
        let advanced = (ack - self.snd_una) as usize;
        if advanced > self.in_flight.len() {
            self.counters.bad_acks += 1;
            return false;
        }
        // Round-trip sample: only from the newest packet this ack newly covers, and only
        // if it was sent once (Karn). Older packets it covers waited behind a hole, not
        // on the network; their delay would inflate the RTO.
        let mut newest: Option<(Instant, bool)> = None;
        // The latest send time of a copy known to have arrived (see below).
        let mut delivered_sent: Option<Instant> = None;
        for slot in self.in_flight.drain(..advanced) {
            if !slot.sacked {
                newest = Some((slot.first_sent, slot.retransmitted));
                delivered_sent = delivered_sent.max(Some(slot.last_sent));
            }
        }
        let opened = advanced > 0;
        self.snd_una = ack;
        if opened {
            self.backoff = 1;
        }
        // Selective acks: bit i is sequence ack + 1 + i, which is index 1 + i now.
        for i in 0..SACK_BITS as usize {
            if sack & (1 << i) == 0 {
                continue;
            }
            let Some(slot) = self.in_flight.get_mut(i + 1) else {
                break;
            };
            if !slot.sacked {
                slot.sacked = true;
                newest = Some((slot.first_sent, slot.retransmitted));
                delivered_sent = delivered_sent.max(Some(slot.last_sent));
            }
        }
        let sample = match newest {
            Some((first_sent, false)) => Some(now.saturating_duration_since(first_sent)),
            _ => None,
        };
        if let Some(sample) = sample {
            self.rtt_sample(sample);
        }
        // Fast retransmit, two rules. A packet sent once is lost when enough later
        // packets were selectively acked (reordering alone rarely passes the threshold).
        // A packet already resent is lost when a copy sent after its latest copy has
        // arrived (the RACK idea, RFC 8985): this repairs a lost retransmission in one
        // round trip instead of a backed-off timeout. Both leave the timer as the backstop.
        let mut sacked_above = 0u32;
        for index in (0..self.in_flight.len()).rev() {
            let slot = &self.in_flight[index];
            if slot.sacked {
                sacked_above += 1;
                continue;
            }
            let lost = if slot.retransmitted {
                delivered_sent.is_some_and(|sent| slot.last_sent < sent)
            } else {
                !slot.fast_retransmitted && sacked_above >= self.params.fast_retransmit_sacks
            };
            if lost {
                self.in_flight[index].fast_retransmitted = true;
                self.counters.fast_retransmits += 1;
                self.retransmit(identity, index, now, out);
            }
        }
        opened
    }

    /// Takes in one data packet; delivers what became in order.
    fn on_data(
        &mut self,
        seq: u32,
        now: Instant,
        payload: &mut dyn FnMut() -> Payload,
        deliver: &mut dyn FnMut(Payload),
    ) -> DataOutcome {
        let old = DataOutcome {
            ack_now: true,
            new: false,
        };
        // No wrapping arithmetic: sequence numbers never wrap (see the module doc), so a
        // packet below rcv_next is old, whenever it was captured.
        if seq < self.rcv_next {
            self.counters.duplicates_dropped += 1;
            return old;
        }
        let ahead = (seq - self.rcv_next) as usize;
        if ahead >= MAX_WINDOW as usize || seq >= self.params.seq_limit {
            self.counters.beyond_window_dropped += 1;
            return old;
        }
        if ahead > 0 {
            if self.reorder.len() <= ahead {
                self.reorder.resize_with(ahead + 1, || None);
            }
            if self.reorder[ahead].is_some() {
                self.counters.duplicates_dropped += 1;
                return old;
            }
            self.reorder[ahead] = Some(payload());
            self.counters.out_of_order_buffered += 1;
            // Ack at once so the sender learns of the gap.
            return DataOutcome {
                ack_now: true,
                new: true,
            };
        }
        let filled_gap = !self.reorder.is_empty();
        self.reorder.pop_front();
        deliver(payload());
        self.counters.received += 1;
        self.rcv_next += 1;
        while let Some(Some(_)) = self.reorder.front() {
            if let Some(Some(next)) = self.reorder.pop_front() {
                deliver(next);
                self.counters.received += 1;
                self.rcv_next += 1;
            }
        }
        let mut outcome = DataOutcome {
            ack_now: true,
            new: true,
        };
        if filled_gap {
            return outcome;
        }
        self.unacked_received += 1;
        if self.unacked_received >= self.params.ack_every {
            return outcome;
        }
        if self.ack_due.is_none() {
            self.ack_due = Some(now + self.params.delayed_ack);
        }
        outcome.ack_now = false;
        outcome
    }

    /// Sends again, at once, every unacknowledged data packet that left before this node
    /// knew the peer's session: it carries an `echo` the peer drops.
    fn resend_after_handshake(
        &mut self,
        identity: &Identity<'_>,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) {
        let (ack, sack, echo) = (self.rcv_next, self.sack_bits(), self.echo());
        let rto = self.current_rto();
        let mut resent = 0;
        for slot in self
            .in_flight
            .iter_mut()
            .filter(|s| !s.sacked && s.echo != echo)
        {
            wire::write_ack_fields(&mut slot.packet, ack, sack, echo);
            slot.echo = echo;
            sign(identity, &mut slot.packet);
            // Not a loss: the peer dropped the first copy unread, so this copy is the
            // one a round-trip sample should be measured from.
            slot.first_sent = now;
            slot.last_sent = now;
            slot.deadline = now + rto;
            if !out(&slot.packet) {
                self.counters.send_errors += 1;
            }
            resent += 1;
        }
        if resent > 0 {
            self.counters.handshake_resends += resent;
            self.note_sent(now);
        }
    }

    /// Handles one packet from this peer whose header already passed the transport's
    /// checks (cluster, destination, source, tag). `payload` is called at most once, to
    /// take the message out of the receive buffer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_packet(
        &mut self,
        identity: &Identity<'_>,
        dst: u32,
        header: &Header,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
        payload: &mut dyn FnMut() -> Payload,
        deliver: &mut dyn FnMut(Payload),
    ) -> PacketOutcome {
        if self.dead {
            self.counters.after_death_dropped += 1;
            return PacketOutcome::default();
        }
        if header.echo != self.session {
            self.counters.unconfirmed_dropped += 1;
            let from_peer = match self.peer_session {
                None => {
                    self.heard_session = Some(header.session);
                    true
                }
                Some(session) => session == header.session,
            };
            if from_peer {
                // Tell the peer which session to echo; its next packet then counts.
                self.send_control(identity, dst, PacketKind::Ack, now, out);
            }
            return PacketOutcome::default();
        }
        let confirmed_now = match self.peer_session {
            None => {
                self.peer_session = Some(header.session);
                self.heard_session = None;
                true
            }
            Some(session) if session != header.session => {
                self.counters.stale_session_dropped += 1;
                return PacketOutcome::default();
            }
            Some(_) => false,
        };
        let mut fresh = confirmed_now;
        if header.kind != PacketKind::Data {
            if self.peer_ctl_seen.is_some_and(|seen| header.seq <= seen) {
                self.counters.stale_control_dropped += 1;
                return PacketOutcome::default();
            }
            self.peer_ctl_seen = Some(header.seq);
            fresh = true;
        }
        let window_opened = self.on_ack(identity, header.ack, header.sack, now, out);
        fresh |= window_opened;
        if header.kind == PacketKind::Data {
            let data = self.on_data(header.seq, now, payload, deliver);
            fresh |= data.new;
            if data.ack_now {
                self.send_control(identity, dst, PacketKind::Ack, now, out);
            }
        }
        if fresh {
            self.last_heard = now;
        }
        if confirmed_now {
            self.resend_after_handshake(identity, now, out);
        }
        PacketOutcome { window_opened }
    }

    /// Runs the timers due at `now`.
    pub(crate) fn on_tick(
        &mut self,
        identity: &Identity<'_>,
        dst: u32,
        now: Instant,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> TickOutcome {
        if self.dead {
            return TickOutcome::Quiet;
        }
        if now.saturating_duration_since(self.last_heard) >= self.params.dead_after {
            self.kill();
            return TickOutcome::Died;
        }
        if self.exhausted() {
            self.counters.sequence_exhausted = 1;
            self.kill();
            return TickOutcome::Died;
        }
        let expired = self
            .in_flight
            .iter()
            .any(|s| !s.sacked && s.deadline <= now);
        if expired {
            self.counters.timeouts += 1;
            self.backoff = self.backoff.saturating_mul(2).min(1 << 16);
            for index in 0..self.in_flight.len() {
                let slot = &self.in_flight[index];
                if !slot.sacked && slot.deadline <= now {
                    self.retransmit(identity, index, now, out);
                }
            }
        }
        if self.ack_due.is_some_and(|due| due <= now) {
            self.send_control(identity, dst, PacketKind::Ack, now, out);
        }
        if now.saturating_duration_since(self.last_sent) >= self.params.heartbeat_interval {
            self.send_control(identity, dst, PacketKind::Heartbeat, now, out);
        }
        TickOutcome::Quiet
    }

    /// When [`Self::on_tick`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        let mut next = (self.last_heard + self.params.dead_after)
            .min(self.last_sent + self.params.heartbeat_interval);
        if let Some(due) = self.ack_due {
            next = next.min(due);
        }
        for slot in self.in_flight.iter().filter(|s| !s.sacked) {
            next = next.min(slot.deadline);
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NoAuth;
    use crate::wire::decode;

    const A: u32 = 1;
    const B: u32 = 2;

    fn params() -> LinkParams {
        LinkParams {
            window: 8,
            initial_rto: Duration::from_millis(1),
            min_rto: Duration::from_millis(1),
            max_rto: Duration::from_millis(64),
            delayed_ack: Duration::from_micros(200),
            ack_every: 4,
            fast_retransmit_sacks: 3,
            heartbeat_interval: Duration::from_millis(100),
            dead_after: Duration::from_secs(1),
            seq_limit: SEQ_LIMIT,
        }
    }

    fn identity(local: u32) -> Identity<'static> {
        Identity {
            cluster: 9,
            local,
            auth: &NoAuth,
        }
    }

    /// One side of a link plus what it sent and delivered.
    struct Side {
        link: PeerLink,
        me: u32,
        peer: u32,
        sent: Vec<Vec<u8>>,
        delivered: Vec<Vec<u8>>,
    }

    impl Side {
        /// A link whose node already heard the peer's session (`peer * 100`): its
        /// packets are confirmed at once, as after the handshake.
        fn new(me: u32, peer: u32, now: Instant) -> Self {
            let mut side = Self::fresh(me, peer, now);
            side.link.heard_session = Some(peer * 100);
            side
        }

        /// A link that has heard nothing (session `me * 100`).
        fn fresh(me: u32, peer: u32, now: Instant) -> Self {
            Self::with_session(me, peer, me * 100, now)
        }

        fn with_session(me: u32, peer: u32, session: u32, now: Instant) -> Self {
            Self {
                link: PeerLink::new(params(), session, now),
                me,
                peer,
                sent: vec![],
                delivered: vec![],
            }
        }

        fn send(&mut self, payload: &[u8], now: Instant) {
            assert!(self.link.can_send());
            let sent = &mut self.sent;
            self.link
                .send_data(&identity(self.me), self.peer, payload, now, &mut |p| {
                    sent.push(p.to_vec());
                    true
                })
                .unwrap();
        }

        fn receive(&mut self, packet: &[u8], now: Instant) -> PacketOutcome {
            let decoded = decode(packet).unwrap();
            let body = decoded.payload.to_vec();
            let (sent, delivered) = (&mut self.sent, &mut self.delivered);
            self.link.on_packet(
                &identity(self.me),
                self.peer,
                &decoded.header,
                now,
                &mut |p| {
                    sent.push(p.to_vec());
                    true
                },
                &mut || Payload::from_vec(body.clone()),
                &mut |p| delivered.push(p.into_vec()),
            )
        }

        fn tick(&mut self, now: Instant) -> TickOutcome {
            let sent = &mut self.sent;
            self.link
                .on_tick(&identity(self.me), self.peer, now, &mut |p| {
                    sent.push(p.to_vec());
                    true
                })
        }

        fn take_sent(&mut self) -> Vec<Vec<u8>> {
            std::mem::take(&mut self.sent)
        }
    }

    fn kinds(packets: &[Vec<u8>]) -> Vec<(PacketKind, u32)> {
        packets
            .iter()
            .map(|p| {
                let h = decode(p).unwrap().header;
                (h.kind, h.seq)
            })
            .collect()
    }

    #[test]
    fn in_order_delivery_with_delayed_ack() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        a.send(b"m0", t0);
        a.send(b"m1", t0);
        for p in a.take_sent() {
            b.receive(&p, t0);
        }
        assert_eq!(b.delivered, vec![b"m0".to_vec(), b"m1".to_vec()]);
        // Two packets are fewer than ack_every: the ack waits for the timer.
        assert!(b.take_sent().is_empty());
        assert_eq!(
            b.link.next_deadline(),
            Some(t0 + Duration::from_micros(200))
        );
        b.tick(t0 + Duration::from_micros(200));
        let acks = b.take_sent();
        assert_eq!(kinds(&acks), vec![(PacketKind::Ack, 0)]);
        assert_eq!(decode(&acks[0]).unwrap().header.ack, 2);
        let outcome = a.receive(&acks[0], t0 + Duration::from_micros(300));
        assert!(outcome.window_opened);
        assert_eq!(a.link.in_flight(), 0);
        assert_eq!(a.link.srtt(), Some(Duration::from_micros(300)));
    }

    #[test]
    fn every_fourth_packet_is_acked_at_once() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        for i in 0..4u8 {
            a.send(&[i], t0);
        }
        for p in a.take_sent() {
            b.receive(&p, t0);
        }
        let acks = b.take_sent();
        assert_eq!(acks.len(), 1);
        assert_eq!(decode(&acks[0]).unwrap().header.ack, 4);
    }

    #[test]
    fn reply_piggybacks_the_ack() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        a.send(b"ping", t0);
        b.receive(&a.take_sent()[0], t0);
        b.send(b"pong", t0);
        let sent = b.take_sent();
        assert_eq!(kinds(&sent), vec![(PacketKind::Data, 0)]);
        assert_eq!(decode(&sent[0]).unwrap().header.ack, 1);
        // No separate ack is owed any more.
        assert_eq!(b.link.ack_due, None);
        a.receive(&sent[0], t0);
        assert_eq!(a.link.in_flight(), 0);
        assert_eq!(a.delivered, vec![b"pong".to_vec()]);
    }

    #[test]
    fn reordered_and_duplicated_packets_are_delivered_once_in_order() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        for i in 0..3u8 {
            a.send(&[i], t0);
        }
        let p = a.take_sent();
        b.receive(&p[2], t0);
        b.receive(&p[2], t0);
        b.receive(&p[0], t0);
        b.receive(&p[0], t0);
        assert_eq!(b.delivered, vec![vec![0]]);
        // The ack after the out-of-order packet reports it selectively.
        let acks = b.take_sent();
        let first = decode(&acks[0]).unwrap().header;
        assert_eq!((first.ack, first.sack), (0, 0b10));
        b.receive(&p[1], t0);
        assert_eq!(b.delivered, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(b.link.counters.duplicates_dropped, 2);
        assert_eq!(b.link.counters.out_of_order_buffered, 1);
        assert_eq!(b.link.counters.received, 3);
    }

    #[test]
    fn timeout_retransmits_with_backoff_and_fresh_ack() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        b.send(b"x", t0);
        a.receive(&b.take_sent()[0], t0);
        a.take_sent();
        a.send(b"lost", t0);
        let first = a.take_sent();
        assert_eq!(decode(&first[0]).unwrap().header.ack, 1);
        assert_eq!(a.link.next_deadline(), Some(t0 + Duration::from_millis(1)));
        // The delayed ack for b's packet was already carried by "lost".
        a.tick(t0 + Duration::from_micros(500));
        assert!(a.take_sent().is_empty());
        let t1 = t0 + Duration::from_millis(1);
        a.tick(t1);
        let again = a.take_sent();
        assert_eq!(kinds(&again), vec![(PacketKind::Data, 0)]);
        assert_eq!(a.link.current_rto(), Duration::from_millis(2));
        assert_eq!(a.link.next_deadline(), Some(t1 + Duration::from_millis(2)));
        a.tick(t1 + Duration::from_millis(2));
        assert_eq!(a.take_sent().len(), 1);
        assert_eq!(a.link.current_rto(), Duration::from_millis(4));
        assert_eq!(a.link.counters.timeouts, 2);
        assert_eq!(a.link.counters.retransmits, 2);
        // Backoff resets when an ack makes progress; the retransmitted packet gives no
        // RTT sample (Karn), so srtt stays unset.
        b.receive(&again[0], t1);
        b.tick(t1 + Duration::from_millis(1));
        for p in b.take_sent() {
            a.receive(&p, t1 + Duration::from_millis(1));
        }
        assert_eq!(a.link.current_rto(), Duration::from_millis(1));
        assert_eq!(a.link.srtt(), None);
        assert_eq!(b.delivered, vec![b"lost".to_vec()]);
    }

    #[test]
    fn retransmit_backoff_is_capped() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        a.send(b"x", t0);
        let mut now = t0;
        for _ in 0..20 {
            now += a.link.current_rto();
            a.tick(now);
            // Keep the peer alive for the test.
            a.link.last_heard = now;
        }
        assert_eq!(a.link.current_rto(), Duration::from_millis(64));
    }

    #[test]
    fn sacks_trigger_one_fast_retransmit_of_the_hole() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        for i in 0..5u8 {
            a.send(&[i], t0);
        }
        let p = a.take_sent();
        for packet in &p[1..] {
            b.receive(packet, t0);
        }
        let acks = b.take_sent();
        assert_eq!(acks.len(), 4);
        for ack in &acks {
            a.receive(ack, t0);
        }
        // Sequence 0 was lost; after three later sacks it is sent again, once.
        let resent = a.take_sent();
        assert_eq!(kinds(&resent), vec![(PacketKind::Data, 0)]);
        assert_eq!(a.link.counters.fast_retransmits, 1);
        b.receive(&resent[0], t0);
        assert_eq!(b.delivered, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
        // Sacked packets are not resent by the timer.
        for ack in b.take_sent() {
            a.receive(&ack, t0);
        }
        assert_eq!(a.link.in_flight(), 0);
    }

    #[test]
    fn a_lost_retransmission_is_resent_when_a_later_packet_arrives() {
        let t0 = Instant::now();
        let (t1, t2) = (
            t0 + Duration::from_micros(10),
            t0 + Duration::from_micros(20),
        );
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        for i in 0..5u8 {
            a.send(&[i], t0);
        }
        let p = a.take_sent();
        for packet in &p[1..] {
            b.receive(packet, t1);
        }
        for ack in b.take_sent() {
            a.receive(&ack, t1);
        }
        // Sequence 0 resent at t1 (fast retransmit)... and lost again.
        assert_eq!(kinds(&a.take_sent()), vec![(PacketKind::Data, 0)]);
        a.send(&[5], t2);
        let five = a.take_sent();
        b.receive(&five[0], t2);
        for ack in b.take_sent() {
            a.receive(&ack, t2);
        }
        // Sequence 5, sent after the lost copy, arrived: 0 is resent without a timeout.
        let resent = a.take_sent();
        assert_eq!(kinds(&resent), vec![(PacketKind::Data, 0)]);
        assert_eq!(a.link.counters.fast_retransmits, 2);
        assert_eq!(a.link.counters.timeouts, 0);
        b.receive(&resent[0], t2);
        assert_eq!(b.delivered, (0..6u8).map(|i| vec![i]).collect::<Vec<_>>());
    }

    #[test]
    fn rtt_is_not_sampled_from_packets_that_waited_behind_a_hole() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        a.send(&[0], t0);
        a.send(&[1], t0);
        let p = a.take_sent();
        // 0 is lost; 1 arrives and is selectively acked after 100 µs.
        b.receive(&p[1], t0 + us(100));
        for ack in b.take_sent() {
            a.receive(&ack, t0 + us(100));
        }
        assert_eq!(a.link.srtt(), Some(us(100)));
        // The timer resends 0; the cumulative ack for both comes 5 ms after 1 was sent.
        a.tick(t0 + us(1_000));
        let resent = a.take_sent();
        b.receive(&resent[0], t0 + us(5_000));
        for ack in b.take_sent() {
            a.receive(&ack, t0 + us(5_000));
        }
        assert_eq!(a.link.in_flight(), 0);
        // Neither 1 (already sampled, and its ack waited for 0) nor 0 (resent) is a sample.
        assert_eq!(a.link.srtt(), Some(us(100)));
    }

    #[test]
    fn window_limits_packets_in_flight() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        for i in 0..8u8 {
            a.send(&[i], t0);
        }
        assert!(!a.link.can_send());
        assert_eq!(a.link.in_flight(), 8);
    }

    #[test]
    fn acks_for_unsent_data_and_far_future_data_are_rejected() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        a.send(b"x", t0);
        // Seen by a as coming from b (session 200, echoing a's 100).
        let bogus = wire::encode_to_vec(
            &Header {
                ack: 5,
                session: 200,
                echo: 100,
                ..decode(&a.take_sent()[0]).unwrap().header
            },
            b"x",
        )
        .unwrap();
        a.receive(&bogus, t0);
        assert_eq!(a.link.counters.bad_acks, 1);
        assert_eq!(a.link.in_flight(), 1);
        let far = wire::encode_to_vec(
            &Header {
                seq: MAX_WINDOW,
                src: A,
                session: 100,
                echo: 200,
                ..decode(&bogus).unwrap().header
            },
            b"x",
        )
        .unwrap();
        b.receive(&far, t0);
        assert_eq!(b.link.counters.beyond_window_dropped, 1);
        assert!(b.delivered.is_empty());
    }

    #[test]
    fn heartbeat_when_idle_and_death_after_silence() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        assert_eq!(
            a.link.next_deadline(),
            Some(t0 + Duration::from_millis(100))
        );
        a.tick(t0 + Duration::from_millis(100));
        assert_eq!(kinds(&a.take_sent()), vec![(PacketKind::Heartbeat, 0)]);
        assert_eq!(a.link.counters.heartbeats_sent, 1);
        // Hearing anything from the peer postpones death.
        let mut b = Side::new(B, A, t0);
        b.tick(t0 + Duration::from_millis(900));
        a.receive(&b.take_sent()[0], t0 + Duration::from_millis(900));
        assert_eq!(a.tick(t0 + Duration::from_millis(1500)), TickOutcome::Quiet);
        assert_eq!(a.tick(t0 + Duration::from_millis(1900)), TickOutcome::Died);
        assert!(a.link.is_dead());
        assert_eq!(a.link.next_deadline(), None);
        assert_eq!(a.tick(t0 + Duration::from_millis(5000)), TickOutcome::Quiet);
    }

    #[test]
    fn packets_of_another_session_are_dropped() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        b.send(b"one", t0);
        a.receive(&b.take_sent()[0], t0);
        let mut restarted = Side::new(B, A, t0);
        restarted.send(b"two", t0);
        let mut packet = restarted.take_sent().remove(0);
        packet[20] ^= 1; // another session number
        a.receive(&packet, t0);
        assert_eq!(a.link.counters.stale_session_dropped, 1);
        assert_eq!(a.delivered, vec![b"one".to_vec()]);
    }

    #[test]
    fn sequence_numbers_never_wrap_the_link_closes_instead() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        a.link.snd_una = SEQ_LIMIT - 2;
        b.link.rcv_next = SEQ_LIMIT - 2;
        a.send(&[0], t0);
        a.send(&[1], t0);
        assert!(!a.link.can_send(), "the last number is never used");
        let p = a.take_sent();
        for packet in p.iter().rev() {
            b.receive(packet, t0);
        }
        assert_eq!(b.delivered, vec![vec![0], vec![1]]);
        // A packet numbered as if the space had wrapped (a capture of sequence 0) is old.
        let wrapped = wire::encode_to_vec(
            &Header {
                seq: 0,
                ..decode(&p[0]).unwrap().header
            },
            &[9],
        )
        .unwrap();
        b.receive(&wrapped, t0);
        assert_eq!(b.delivered.len(), 2);
        assert_eq!(b.link.counters.duplicates_dropped, 1);
        // Once what is in flight is acked, the link closes rather than wrap.
        a.tick(t0);
        assert!(!a.link.is_dead(), "packets still in flight");
        b.tick(t0 + Duration::from_millis(1));
        for ack in b.take_sent() {
            a.receive(&ack, t0 + Duration::from_millis(1));
        }
        assert_eq!(a.link.in_flight(), 0);
        assert_eq!(a.tick(t0 + Duration::from_millis(1)), TickOutcome::Died);
        assert_eq!(a.link.counters.sequence_exhausted, 1);
    }

    #[test]
    fn the_session_handshake_takes_one_round_trip_and_loses_nothing() {
        let t0 = Instant::now();
        let mut a = Side::fresh(A, B, t0);
        let mut b = Side::fresh(B, A, t0);
        a.send(b"first", t0);
        a.send(b"second", t0);
        let early = a.take_sent();
        assert_eq!(decode(&early[0]).unwrap().header.echo, 0);
        for p in &early {
            b.receive(p, t0);
        }
        // Not confirmed: nothing delivered, and b answers with its session.
        assert!(b.delivered.is_empty());
        assert_eq!(b.link.counters.unconfirmed_dropped, 2);
        assert_eq!(b.link.peer_session(), None);
        let answers = b.take_sent();
        assert_eq!(decode(&answers[0]).unwrap().header.echo, 100);
        a.receive(&answers[0], t0);
        assert_eq!(a.link.peer_session(), Some(200));
        // a sends its data again at once, now echoing b's session.
        let resent = a.take_sent();
        assert_eq!(
            kinds(&resent),
            vec![(PacketKind::Data, 0), (PacketKind::Data, 1)]
        );
        assert!(resent.iter().all(|p| decode(p).unwrap().header.echo == 200));
        assert_eq!(a.link.counters.handshake_resends, 2);
        assert_eq!(a.link.counters.retransmits, 0);
        for p in &resent {
            b.receive(p, t0);
        }
        assert_eq!(b.link.peer_session(), Some(100));
        assert_eq!(b.delivered, vec![b"first".to_vec(), b"second".to_vec()]);
        // The early copies, arriving late or replayed, are still not acted on.
        for p in &early {
            b.receive(p, t0);
        }
        assert_eq!(b.delivered.len(), 2);
    }

    #[test]
    fn packets_of_an_earlier_run_cannot_open_or_feed_a_link() {
        let t0 = Instant::now();
        // An earlier run: b (session 777) talked to a (session 555) and a capture exists.
        let mut old_a = Side::with_session(A, B, 555, t0);
        let mut old_b = Side::with_session(B, A, 777, t0);
        old_b.link.heard_session = Some(555);
        old_a.link.heard_session = Some(777);
        old_b.send(b"old write", t0);
        old_b.tick(t0 + Duration::from_millis(150));
        let captured = old_b.take_sent();
        old_a.receive(&captured[0], t0);
        assert_eq!(old_a.delivered, vec![b"old write".to_vec()]);
        // This run: a is new (session 100) and hears the replay before the real b.
        let mut a = Side::fresh(A, B, t0);
        let mut b = Side::fresh(B, A, t0);
        for p in &captured {
            a.receive(p, t0);
        }
        assert!(a.delivered.is_empty());
        assert_eq!(
            a.link.peer_session(),
            None,
            "a replay cannot fix the session"
        );
        assert_eq!(a.link.counters.unconfirmed_dropped, 2);
        // a's answers go to the real b, which completes the handshake with a.
        for p in a.take_sent() {
            b.receive(&p, t0);
        }
        for p in b.take_sent() {
            a.receive(&p, t0);
        }
        assert_eq!(a.link.peer_session(), Some(200));
        b.send(b"new write", t0);
        for p in b.take_sent() {
            a.receive(&p, t0);
        }
        assert_eq!(a.delivered, vec![b"new write".to_vec()]);
        // Replayed after the handshake: another session, dropped.
        for p in &captured {
            a.receive(p, t0);
        }
        assert_eq!(a.delivered, vec![b"new write".to_vec()]);
        assert!(a.link.counters.stale_session_dropped + a.link.counters.unconfirmed_dropped >= 4);
    }

    #[test]
    fn a_replayed_data_packet_is_delivered_once() {
        let t0 = Instant::now();
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        let mut captured = Vec::new();
        for i in 0..8u8 {
            a.send(&[i], t0);
            let p = a.take_sent();
            b.receive(&p[0], t0);
            captured.extend(p);
        }
        for round in 0..3 {
            for p in &captured {
                b.receive(p, t0 + Duration::from_millis(round));
            }
        }
        assert_eq!(b.delivered, (0..8u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert_eq!(b.link.counters.duplicates_dropped, 24);
        assert_eq!(b.link.counters.received, 8);
    }

    #[test]
    fn a_replayed_heartbeat_does_not_keep_a_dead_peer_alive() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut a = Side::new(A, B, t0);
        let mut b = Side::new(B, A, t0);
        b.tick(t0 + ms(900));
        let heartbeat = b.take_sent();
        assert_eq!(kinds(&heartbeat), vec![(PacketKind::Heartbeat, 0)]);
        a.receive(&heartbeat[0], t0 + ms(900));
        // b dies; an attacker replays its heartbeat every 100 ms.
        for at in [1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800] {
            a.receive(&heartbeat[0], t0 + ms(at));
            a.take_sent();
        }
        assert_eq!(a.link.counters.stale_control_dropped, 9);
        assert_eq!(a.tick(t0 + ms(1900)), TickOutcome::Died);
    }
}
