#!/usr/bin/env python3
"""Which smtpsd worker holds which connections, from the kernel alone (used by bench-scale.sh).

Each smtps-server worker has its own mio `Poll`, i.e. its own epoll instance, and its own
SO_REUSEPORT listening socket. The kernel shows both ends of that:

- `/proc/PID/task/TID/syscall` of a thread blocked in `epoll_wait`/`epoll_pwait`/`epoll_pwait2`
  names the epoll descriptor it waits on (the first argument): thread -> epoll instance;
- `/proc/PID/fdinfo/EPFD` lists every descriptor registered in that instance (`tfd:` lines):
  epoll instance -> sockets; `/proc/PID/fd/TFD` -> `socket:[INODE]`, and the inodes in state
  LISTEN (0A) of /proc/net/tcp{,6} are the listeners; every other socket is a connection.

Usage: bench-scale-workers.py PID  -> one line per epoll instance:
    epfd=5 tid=123 comm=smtps-worker-1 cpu_ticks=456 listeners=1 connections=4999 other=1
(tid/comm/cpu_ticks are '-' when no thread was seen waiting on that instance). Standard
library only."""

import os
import sys

EPOLL_WAITS = {232, 281, 441}  # x86_64: epoll_wait, epoll_pwait, epoll_pwait2


def listening_inodes():
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        inodes.add(fields[9])
        except OSError:
            pass
    return inodes


def main():
    pid = sys.argv[1]
    listen = listening_inodes()
    waiting = {}  # epfd -> (tid, comm, cpu ticks)
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        base = f"/proc/{pid}/task/{tid}"
        try:
            call = open(f"{base}/syscall", encoding="ascii").read().split()
            comm = open(f"{base}/comm", encoding="utf-8").read().strip()
            stat = open(f"{base}/stat", encoding="ascii").read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])
        if call and call[0].isdigit() and int(call[0]) in EPOLL_WAITS:
            waiting[int(call[1], 16)] = (tid, comm, ticks)
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            info = open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii").read()
        except OSError:
            continue
        listeners = connections = other = 0
        for line in info.splitlines():
            if not line.startswith("tfd:"):
                continue
            tfd = line.split()[1]
            try:
                target = os.readlink(f"/proc/{pid}/fd/{tfd}")
            except OSError:
                other += 1
                continue
            if target.startswith("socket:["):
                if target[8:-1] in listen:
                    listeners += 1
                else:
                    connections += 1
            else:
                other += 1
        tid, comm, ticks = waiting.get(int(fd), ("-", "-", "-"))
        print(f"epfd={fd} tid={tid} comm={comm} cpu_ticks={ticks} listeners={listeners} "
              f"connections={connections} other={other}")


if __name__ == "__main__":
    main()
