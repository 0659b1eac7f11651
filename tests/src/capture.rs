//! Packet captures with tcpdump inside a namespace (`--immediate-mode`: without it the last
//! packets, often the NOTIFICATIONs, can be lost when it stops — docs/testing.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::{Netns, Process};
use crate::support::{require, wait_for};

/// A running capture to a pcap file.
#[derive(Debug)]
pub struct Capture {
    ns: Netns,
    file: PathBuf,
    process: Process,
}

impl Capture {
    /// Starts `tcpdump -i IFNAME --immediate-mode -U -w FILE FILTER` in `ns` and waits until
    /// it listens. `filter` is a pcap filter such as `tcp port 179` (may be empty).
    #[track_caller]
    pub fn start(ns: &Netns, name: &str, ifname: &str, filter: &str) -> Capture {
        require("tcpdump");
        let dir = ns.topology().subdir("captures");
        let file = dir.join(format!("{name}.pcap"));
        let mut cmd = ns.command("tcpdump");
        // -Z root: keep the privileges needed to write into the test's directory.
        cmd.args([
            "-i",
            ifname,
            "--immediate-mode",
            "-U",
            "-n",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file);
        cmd.args(filter.split_whitespace());
        let process = ns.topology().spawn(&format!("tcpdump-{name}"), cmd);
        wait_for(
            Duration::from_secs(10),
            &format!("tcpdump on {ifname} to listen"),
            || {
                if let Some(s) = process.try_exit_status() {
                    panic!("tcpdump exited ({s}): {}", process.stderr());
                }
                let e = process.stderr();
                if e.contains("listening on") {
                    Ok(())
                } else {
                    Err(e)
                }
            },
        );
        Capture {
            ns: ns.clone(),
            file,
            process,
        }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes) and returns the pcap file.
    pub fn stop(&self) -> &Path {
        self.process.signal("INT");
        if self.process.wait_exit(Duration::from_secs(3)).is_none() {
            self.process.stop();
        }
        &self.file
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The capture decoded by `tcpdump -r FILE -nn -v` (stop first for a complete file).
    pub fn text(&self) -> String {
        let f = self.file.display().to_string();
        self.ns.exec("tcpdump", &["-r", &f, "-nn", "-v"]).stdout
    }

    /// The number of packets in the file (`tcpdump -r FILE -nn -q`, one line each).
    pub fn packet_count(&self) -> usize {
        let f = self.file.display().to_string();
        self.ns
            .exec("tcpdump", &["-r", &f, "-nn", "-q"])
            .stdout
            .lines()
            .count()
    }
}

/// One BGP message reassembled from a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpMessage {
    /// RFC 4271 §4.1 type: 1 OPEN, 2 UPDATE, 3 NOTIFICATION, 4 KEEPALIVE, 5 ROUTE-REFRESH.
    pub kind: u8,
    pub length: usize,
    /// For an UPDATE: the IPv4 NLRI it announces (RFC 4271 §4.3; MP_REACH prefixes are not
    /// counted) and the withdrawn routes.
    pub announced: usize,
    pub withdrawn: usize,
}

impl Capture {
    /// The BGP messages `from` sent in this capture (stop it first), reassembled from the TCP
    /// stream: a capture started mid-session is aligned on the first BGP marker, and
    /// retransmitted bytes are taken once.
    pub fn bgp_messages_from(&self, from: std::net::IpAddr) -> Vec<BgpMessage> {
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        bgp_messages(&tcp_stream_from(&bytes, from))
    }
}

/// The TCP payload bytes sent by `from` in a pcap file (Ethernet, IPv4 or IPv6), in sequence
/// order, overlapping (retransmitted) bytes once. One TCP connection per source is assumed.
pub fn tcp_stream_from(pcap: &[u8], from: std::net::IpAddr) -> Vec<u8> {
    let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
    if pcap.len() < 24 {
        return Vec::new();
    }
    let le = pcap[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || pcap[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(pcap, 20);
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let caplen = u32_at(pcap, off + 8) as usize;
        let start = off + 16;
        let Some(frame) = pcap.get(start..start + caplen) else {
            break;
        };
        off = start + caplen;
        // 1: Ethernet; 113: Linux cooked (SLL), 276: SLL2.
        let l3 = match linktype {
            1 if frame.len() > 14 => &frame[14..],
            113 if frame.len() > 16 => &frame[16..],
            276 if frame.len() > 20 => &frame[20..],
            _ => continue,
        };
        let (src, l4) = match l3.first().map(|b| b >> 4) {
            Some(4) if l3.len() >= 20 && l3[9] == 6 => {
                let ihl = usize::from(l3[0] & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([l3[2], l3[3]])).min(l3.len());
                let src = std::net::IpAddr::from([l3[12], l3[13], l3[14], l3[15]]);
                (src, l3.get(ihl..total).unwrap_or_default())
            }
            Some(6) if l3.len() >= 40 && l3[6] == 6 => {
                let plen = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
                let mut a = [0u8; 16];
                a.copy_from_slice(&l3[8..24]);
                (
                    std::net::IpAddr::from(a),
                    l3.get(40..40 + plen).unwrap_or_default(),
                )
            }
            _ => continue,
        };
        if src != from || l4.len() < 20 {
            continue;
        }
        let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
        let data_off = usize::from(l4[12] >> 4) * 4;
        if let Some(payload) = l4.get(data_off..).filter(|p| !p.is_empty()) {
            segments.push((seq, payload.to_vec()));
        }
    }
    let Some(base) = segments.first().map(|s| s.0) else {
        return Vec::new();
    };
    // Offsets from the first segment, wrapping like TCP sequence numbers.
    let mut by_offset: Vec<(u32, Vec<u8>)> = segments
        .into_iter()
        .map(|(seq, p)| (seq.wrapping_sub(base), p))
        .filter(|(o, _)| *o < u32::MAX / 2)
        .collect();
    by_offset.sort_by_key(|s| s.0);
    let mut out: Vec<u8> = Vec::new();
    for (o, p) in by_offset {
        let o = o as usize;
        if o + p.len() <= out.len() {
            continue;
        }
        if o > out.len() {
            // A hole (capture lost bytes): stop rather than misalign.
            break;
        }
        out.extend_from_slice(&p[out.len() - o..]);
    }
    out
}

/// Splits a BGP byte stream into messages, starting at the first marker.
pub fn bgp_messages(stream: &[u8]) -> Vec<BgpMessage> {
    let marker = [0xffu8; 16];
    let Some(mut i) = stream.windows(19).position(|w| {
        w[..16] == marker && (19..=65535).contains(&usize::from(u16::from_be_bytes([w[16], w[17]])))
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while i + 19 <= stream.len() && stream[i..i + 16] == marker {
        let length = usize::from(u16::from_be_bytes([stream[i + 16], stream[i + 17]]));
        let kind = stream[i + 18];
        let Some(msg) = stream.get(i..i + length).filter(|_| length >= 19) else {
            break;
        };
        let (mut announced, mut withdrawn) = (0, 0);
        if kind == 2 && length >= 23 {
            let body = &msg[19..];
            let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let w = body.get(2..2 + wlen).unwrap_or_default();
            withdrawn = count_prefixes(w);
            if let Some(a) = body.get(2 + wlen..2 + wlen + 2) {
                let alen = usize::from(u16::from_be_bytes([a[0], a[1]]));
                announced = count_prefixes(body.get(4 + wlen + alen..).unwrap_or_default());
            }
        }
        out.push(BgpMessage {
            kind,
            length,
            announced,
            withdrawn,
        });
        i += length;
    }
    out
}

/// Prefixes in an RFC 4271 §4.3 NLRI / Withdrawn Routes field (length in bits, then bytes).
fn count_prefixes(mut b: &[u8]) -> usize {
    let mut n = 0;
    while let Some(&bits) = b.first() {
        let len = 1 + usize::from(bits).div_ceil(8);
        if len > b.len() {
            break;
        }
        b = &b[len..];
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(prefixes: &[[u8; 4]]) -> Vec<u8> {
        let mut nlri = Vec::new();
        for p in prefixes {
            nlri.push(32);
            nlri.extend_from_slice(p);
        }
        let attrs = [0x40, 1, 1, 0]; // ORIGIN IGP
        let len = 19 + 2 + 2 + attrs.len() + nlri.len();
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.push(2);
        m.extend_from_slice(&[0, 0, 0, attrs.len() as u8]);
        m.extend_from_slice(&attrs);
        m.extend_from_slice(&nlri);
        m
    }

    #[test]
    fn splits_a_stream_caught_mid_message_and_counts_nlri() {
        let keepalive = {
            let mut k = vec![0xff; 16];
            k.extend_from_slice(&[0, 19, 4]);
            k
        };
        let mut stream = vec![1, 2, 3]; // the tail of a message before the capture started
        stream.extend(update(&[[203, 0, 113, 1], [203, 0, 113, 2]]));
        stream.extend(&keepalive);
        stream.extend(update(&[[203, 0, 113, 3]]));
        let m = bgp_messages(&stream);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!((m[0].kind, m[0].announced), (2, 2));
        assert_eq!(m[1].kind, 4);
        assert_eq!((m[2].kind, m[2].announced, m[2].withdrawn), (2, 1, 0));
    }
}
