//! netprobe: the client side of skiff's network tests, run inside test namespaces and cgroups.
//! Every command prints one JSON line (a `session` prints two: one when connected, one at
//! the end), `{"ok":false,"errno":..,"error":..}` on failure.
//!
//! - `tcp ADDR`: connect, read the server's greeting line, report it with both addresses.
//! - `session ADDR COUNT INTERVAL_MS`: connect, then exchange COUNT echoes INTERVAL_MS apart.
//! - `udp ADDR`: sendto() one datagram from an unconnected socket, report the reply and its
//!   source address as recvfrom() gives it.
//! - `loop ADDR SECONDS`: connect and read a greeting over and over; report successes,
//!   failures and the first errors.
//! - `udp-send ADDR COUNT`: send COUNT datagrams, expect nothing back.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| format!("bad address {s}: {e}"))
    };
    let result = match args.as_slice() {
        ["tcp", addr] => parse(addr).map(tcp),
        ["session", addr, count, interval] => parse(addr).and_then(|a| {
            let count = count.parse().map_err(|_| "bad COUNT".to_owned())?;
            let interval = interval.parse().map_err(|_| "bad INTERVAL_MS".to_owned())?;
            Ok(session(a, count, Duration::from_millis(interval)))
        }),
        ["udp", addr] => parse(addr).map(udp),
        ["loop", addr, secs] => parse(addr).and_then(|a| {
            let secs = secs.parse().map_err(|_| "bad SECONDS".to_owned())?;
            Ok(connect_loop(a, Duration::from_secs_f64(secs)))
        }),
        ["udp-send", addr, count] => parse(addr).and_then(|a| {
            let count = count.parse().map_err(|_| "bad COUNT".to_owned())?;
            Ok(udp_send(a, count))
        }),
        _ => {
            eprintln!(
                "usage: netprobe tcp ADDR | session ADDR COUNT INTERVAL_MS | udp ADDR | \
                 loop ADDR SECONDS | udp-send ADDR COUNT"
            );
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(value) => println!("{value}"),
        Err(e) => println!("{}", json!({"ok": false, "error": e})),
    }
    ExitCode::SUCCESS
}

fn failure(e: &std::io::Error) -> Value {
    json!({"ok": false, "errno": e.raw_os_error(), "error": e.to_string()})
}

/// Connects and reads the greeting line.
fn greet(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>, String)> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before the greeting",
        ));
    }
    Ok((stream, reader, line.trim_end().to_owned()))
}

fn tcp(addr: SocketAddr) -> Value {
    match greet(addr) {
        Ok((stream, _, greeting)) => json!({
            "ok": true,
            "reply": greeting,
            "peer": stream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            "local": stream.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        }),
        Err(e) => failure(&e),
    }
}

fn session(addr: SocketAddr, count: u32, interval: Duration) -> Value {
    let (mut stream, mut reader, greeting) = match greet(addr) {
        Ok(s) => s,
        Err(e) => return failure(&e),
    };
    println!(
        "{}",
        json!({"ok": true, "connected": true, "reply": greeting})
    );
    let _ = std::io::stdout().flush();
    let mut echoed = 0;
    for i in 0..count {
        thread::sleep(interval);
        let ping = format!("ping {i}\n");
        let mut line = String::new();
        if let Err(e) = stream
            .write_all(ping.as_bytes())
            .and_then(|()| reader.read_line(&mut line).map(|_| ()))
        {
            return json!({"ok": false, "reply": greeting, "echoed": echoed, "error": e.to_string()});
        }
        if line != ping {
            return json!({"ok": false, "reply": greeting, "echoed": echoed, "error": format!("echo {line:?}")});
        }
        echoed += 1;
    }
    json!({"ok": true, "reply": greeting, "echoed": echoed})
}

fn udp(addr: SocketAddr) -> Value {
    let run = || -> std::io::Result<Value> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        socket.send_to(b"hello", addr)?;
        let mut buf = [0_u8; 512];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok(json!({
            "ok": true,
            "reply": String::from_utf8_lossy(&buf[..n]).trim_end(),
            "from": from.to_string(),
        }))
    };
    run().unwrap_or_else(|e| failure(&e))
}

fn connect_loop(addr: SocketAddr, duration: Duration) -> Value {
    let deadline = Instant::now() + duration;
    let (mut ok, mut failed) = (0_u64, 0_u64);
    let mut errors: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        match greet(addr) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(e.to_string());
                }
            }
        }
    }
    json!({"ok": failed == 0, "connections": ok, "failed": failed, "errors": errors})
}

fn udp_send(addr: SocketAddr, count: u32) -> Value {
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
