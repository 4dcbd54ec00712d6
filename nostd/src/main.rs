//! A `#![no_std]`, `#![no_main]` program for the host that links and calls every module of
//! `lepus-core`, with no allocator: if the core needed `std` or `alloc`, this would not link.
//! It talks to the outside world only through libc's `write(2)`.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
}

fn print(text: &str) {
    // SAFETY: the pointer and length come from a valid `&str`.
    unsafe {
        write(1, text.as_ptr(), text.len());
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    print("lepus-core no_std check: panic\n");
    loop {}
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    print("lepus-core no_std check: ok\n");
    0
}
