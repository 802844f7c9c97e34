//! Deleting conntrack entries through ctnetlink (no `conntrack` tool needed).
//!
//! When a UDP hostPort mapping goes away, entries that DNAT to the pod's
//! `ip:container_port` would keep steering a client's datagrams to a dead address
//! until they time out; [`flush_udp_to`] deletes them. It dumps the table of the
//! family, picks UDP entries whose reply source is the pod's address and port, and
//! deletes each by its original tuple (and zone), exactly as the kernel reported it.

use std::net::IpAddr;

use rtnetlink::sys::{Socket, protocols::NETLINK_NETFILTER};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const IPPROTO_UDP: u8 = 17;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ENOENT: i32 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// (type without flags, payload, the whole attribute padded)
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        let whole = &b[..align4(len).min(b.len())];
        out.push((ty, &b[4..len], whole));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).into_iter().find(|a| a.0 == ty).map(|a| a.1)
}

fn header(ty: u16, flags: u16, seq: u32, family: u8, body: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(body);
    m
}

/// Splits a datagram into (type, payload after nlmsghdr).
fn messages(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        if len < 16 || len > b.len() {
            break;
        }
        out.push((ty, &b[16..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

fn recv(sock: &Socket) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(1 << 17);
    sock.recv(&mut buf, 0)
        .map_err(|e| format!("ctnetlink recv: {e}"))?;
    Ok(buf)
}

fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Deletes the UDP conntrack entries whose reply comes from `pod_ip:port`.
/// Returns how many were deleted. Blocking: call from `spawn_blocking`.
pub(crate) fn flush_udp_to(pod_ip: IpAddr, port: u16) -> Result<usize, String> {
    let family = if pod_ip.is_ipv6() { AF_INET6 } else { AF_INET };
    let src_attr = if pod_ip.is_ipv6() {
        CTA_IP_V6_SRC
    } else {
        CTA_IP_V4_SRC
    };
    let want_ip = ip_bytes(pod_ip);
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("ctnetlink socket: {e}"))?;
    sock.bind_auto()
        .map_err(|e| format!("ctnetlink bind: {e}"))?;
    let dump = header(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        &[],
    );
    sock.send(&dump, 0)
        .map_err(|e| format!("ctnetlink send: {e}"))?;
    let mut victims: Vec<Vec<u8>> = Vec::new();
    'dump: loop {
        let buf = recv(&sock)?;
        if buf.is_empty() {
            break;
        }
        for (ty, payload) in messages(&buf) {
            match ty {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(format!(
                            "ctnetlink dump: {}",
                            std::io::Error::from_raw_os_error(code.abs())
                        ));
                    }
                    break 'dump;
                }
                _ => {}
            }
            let Some(body) = payload.get(4..) else {
                continue;
            };
            let Some(reply) = find(body, CTA_TUPLE_REPLY) else {
                continue;
            };
            let ip = find(reply, CTA_TUPLE_IP).and_then(|t| find(t, src_attr));
            let proto = find(reply, CTA_TUPLE_PROTO);
            let num = proto
                .and_then(|p| find(p, CTA_PROTO_NUM))
                .and_then(|v| v.first());
            let sport = proto
                .and_then(|p| find(p, CTA_PROTO_SRC_PORT))
                .and_then(|v| v.get(..2))
                .map(|v| u16::from_be_bytes([v[0], v[1]]));
            if ip == Some(want_ip.as_slice()) && num == Some(&IPPROTO_UDP) && sport == Some(port) {
                let mut del = Vec::new();
                for (t, _, whole) in attrs(body) {
                    if t == CTA_TUPLE_ORIG || t == CTA_ZONE {
                        del.extend_from_slice(whole);
                    }
                }
                victims.push(del);
            }
        }
    }
    let mut deleted = 0;
    for (i, body) in victims.iter().enumerate() {
        let seq = u32::try_from(i).unwrap_or(0).wrapping_add(2);
        let m = header(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            body,
        );
        sock.send(&m, 0)
            .map_err(|e| format!("ctnetlink send: {e}"))?;
        let buf = recv(&sock)?;
        for (ty, payload) in messages(&buf) {
            if ty == NLMSG_ERROR {
                match error_code(payload) {
                    0 => deleted += 1,
                    c if c.abs() == ENOENT => {}
                    c => {
                        return Err(format!(
                            "ctnetlink delete: {}",
                            std::io::Error::from_raw_os_error(c.abs())
                        ));
                    }
                }
            }
        }
    }
    Ok(deleted)
}
