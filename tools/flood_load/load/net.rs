//! Sockets of the load: connections bound to a source address spread over
//! 127.0.0.1..=127.0.0.N before connecting, so many thousands of
//! connections (and connection churn's TIME_WAITs) never run out of
//! ephemeral ports; blocking or nonblocking.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The source address of connection `i` when spreading over `sources`
/// loopback addresses (0: let the kernel choose).
pub fn source(i: usize, sources: u32) -> Option<SocketAddr> {
    if sources == 0 {
        return None;
    }
    let host = 1 + (i as u32 % sources.min(254)) as u8;
    Some(SocketAddr::from(([127, 0, 0, host], 0)))
}

fn socket(dst: SocketAddr, src: Option<SocketAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = src {
        socket.bind(&SockAddr::from(src))?;
    }
    Ok(socket)
}

/// A blocking connection from `src` (if any) to `dst`.
pub fn connect_blocking(
    dst: SocketAddr,
    src: Option<SocketAddr>,
) -> io::Result<std::net::TcpStream> {
    let socket = socket(dst, src)?;
    socket.connect(&SockAddr::from(dst))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A nonblocking connect from `src` (if any) to `dst`, under way.
pub fn connect_nonblocking(dst: SocketAddr, src: Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = socket(dst, src)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source(0, 0), None);
        assert_eq!(source(0, 4), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(source(5, 4), Some("127.0.0.2:0".parse().unwrap()));
    }
}
