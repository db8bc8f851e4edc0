//! netprobe: the client side of skiff's network tests, run inside test namespaces and cgroups.
//!
//! `netprobe tcp ADDR` connects, reads the reply and prints one JSON line
//! `{"ok":true,"peer":..,"local":..,"reply":..}` or `{"ok":false,"errno":..,"error":..}`.
//! `netprobe udp-send ADDR COUNT` sends COUNT datagrams and prints how many went out.
#![forbid(unsafe_code)]

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tcp", addr] => tcp(addr),
        ["udp-send", addr, count] => udp_send(addr, count),
        _ => {
            eprintln!("usage: netprobe tcp ADDR | netprobe udp-send ADDR COUNT");
            return ExitCode::from(64);
        }
    };
    println!("{result}");
    ExitCode::SUCCESS
}

fn failure(e: &std::io::Error) -> serde_json::Value {
    json!({"ok": false, "errno": e.raw_os_error(), "error": e.to_string()})
}

fn tcp(addr: &str) -> serde_json::Value {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return json!({"ok": false, "error": format!("bad address {addr}: {e}")}),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let mut reply = String::new();
    if let Err(e) = stream.read_to_string(&mut reply) {
        return failure(&e);
    }
    json!({
        "ok": true,
        "peer": stream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        "local": stream.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "reply": reply,
    })
}

fn udp_send(addr: &str, count: &str) -> serde_json::Value {
    let (Ok(addr), Ok(count)) = (addr.parse::<SocketAddr>(), count.parse::<u32>()) else {
        return json!({"ok": false, "error": "usage: udp-send ADDR COUNT"});
    };
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    let mut sent = 0;
    for i in 0..count {
        match socket.send_to(format!("probe {i}").as_bytes(), addr) {
            Ok(_) => sent += 1,
            Err(e) => return failure(&e),
        }
    }
    json!({"ok": true, "sent": sent})
}
