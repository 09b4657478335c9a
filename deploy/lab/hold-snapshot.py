#!/usr/bin/python3
"""Lab fault hold-snapshot: an application session that opens a transaction, reads (taking a
snapshot, so its backend_xmin holds the xmin horizon), and stays idle in it until SIGTERM.

    hold-snapshot.py HOST PORT USER PASSWORD
"""
import signal
import sys
import time

import psycopg2


def main():
    host, port, user, password = sys.argv[1:5]
    conn = psycopg2.connect(host=host, port=port, user=user, password=password, dbname="postgres",
                            connect_timeout=5, application_name="vigie-lab-forgotten-tx")
    cur = conn.cursor()
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    cur.execute("SELECT pg_backend_pid(), count(*) FROM pg_class")
    pid, _ = cur.fetchone()
    print(f"holding a snapshot idle in transaction as pid {pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
