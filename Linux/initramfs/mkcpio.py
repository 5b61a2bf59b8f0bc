#!/usr/bin/env python3
"""Writes the test initramfs as a newc ("070701") cpio archive, reproducibly (owner root, mtime 0).

Entries: /bin/busybox and a link per applet the init script and the shell test use, /init,
/dev/console (char 5:1, so init has a console before devtmpfs is mounted), and empty /proc, /sys,
/dev, /root and /tmp. The format is Linux's Documentation/driver-api/early-userspace/buffer-format.rst.
"""
import argparse

APPLETS = ["sh", "mount", "cat", "echo", "nproc", "poweroff", "reboot", "sleep", "ls", "uname",
           "dmesg", "head", "grep", "true", "false", "awk",
           # the virtio checks
           "mkdir", "mke2fs", "umount", "sync", "dd", "wc", "ip", "ping", "basename", "timeout", "sed"]


class Cpio:
    def __init__(self):
        self.data = bytearray()
        self.inode = 1

    def add(self, name, mode, body=b"", rdev=(0, 0)):
        name_bytes = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(name_bytes), 0]
        self.inode += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + name_bytes
        self.pad()
        self.data += body
        self.pad()

    def pad(self):
        self.data += b"\0" * (-len(self.data) % 4)

    def finish(self):
        self.add("TRAILER!!!", 0)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--busybox", required=True)
    parser.add_argument("--init", required=True)
    parser.add_argument("--program", action="append", default=[], metavar="PATH",
                        help="another static program for /bin (its file name is kept)")
    parser.add_argument("output")
    args = parser.parse_args()

    directory, regular, symlink, chardev = 0o040755, 0o100755, 0o120777, 0o020600
    cpio = Cpio()
    for d in ["bin", "dev", "proc", "sys", "root", "tmp", "mnt"]:
        cpio.add(d, directory)
    cpio.add("dev/console", chardev, rdev=(5, 1))
    cpio.add("bin/busybox", regular, open(args.busybox, "rb").read())
    for applet in APPLETS:
        cpio.add("bin/" + applet, symlink, b"busybox")
    for program in args.program:
        cpio.add("bin/" + program.rsplit("/", 1)[-1], regular, open(program, "rb").read())
    cpio.add("init", regular, open(args.init, "rb").read())
    with open(args.output, "wb") as out:
        out.write(cpio.finish())


if __name__ == "__main__":
    main()
