#!/usr/bin/python3
"""make bench's peer row: the same drain as the module's dequeue+ack row (put N messages, then
take and ack them one by one, one process) through Celery's own database transport, kombu's
SQLAlchemy transport (sqla+mysql://, MySQLdb) on the same server.

    kombu_peer.py SOCKET USER PASSWORD DATABASE N   ->  prints "<messages> <seconds>"
"""
import queue
import sys
import time
from urllib.parse import quote

from kombu import Connection


def main():
    sock, user, password, database, n = sys.argv[1:6]
    n = int(n)
    url = "sqla+mysql://%s:%s@localhost/%s?unix_socket=%s&charset=utf8mb4" % (
        quote(user, safe=""), quote(password, safe=""), database, sock)
    with Connection(url) as conn:
        q = conn.SimpleQueue("kombu_bench")
        q.clear()
        for _ in range(n):
            q.put({"n": 1})
        t0 = time.monotonic()
        done = 0
        while True:
            try:
                msg = q.get(block=False)
            except queue.Empty:
                break
            msg.ack()
            done += 1
        print(done, "%.6f" % (time.monotonic() - t0))
        q.close()


if __name__ == "__main__":
    main()
