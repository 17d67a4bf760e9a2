//! TCP options the event loop sets on an association's socket per read, where going
//! through Python's socket object would build (and audit) a new one on every call.

/// Ask Linux to acknowledge at once what has arrived on `fd`, instead of after the
/// delayed-ACK timer (~40 ms). The kernel clears the flag again on its own, so a
/// caller that wants it sets it after each read that ends a request.
#[cfg(target_os = "linux")]
pub fn quick_ack(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&on`, which lives on
    // this stack frame for the whole call; a closed or non-socket `fd` is reported
    // as an error (EBADF, ENOTSOCK), never undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no such option: nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn quick_ack(_fd: i32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn sets_the_option_on_a_tcp_socket_and_refuses_anything_else() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        quick_ack(stream.as_raw_fd()).unwrap();
        let file = std::fs::File::open("Cargo.toml").unwrap();
        let err = quick_ack(file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    }
}
