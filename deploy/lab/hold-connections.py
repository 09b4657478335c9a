#!/usr/bin/python3
"""Lab fault saturate-connections: an application that uses up a PostgreSQL server's connection
slots. Opens sessions as an ordinary role until the server refuses one with SQLSTATE 53300
("remaining connection slots are reserved…" / "too many clients"), prints how many it holds,
then keeps them idle until SIGTERM.

    hold-connections.py HOST PORT USER PASSWORD
"""
import signal
import sys
import time

import psycopg2

LIMIT = 2000


def main():
    host, port, user, password = sys.argv[1:5]
    held = []
    refusal = None
    while len(held) < LIMIT:
        try:
            held.append(
                psycopg2.connect(host=host, port=port, user=user, password=password,
                                 dbname="postgres", connect_timeout=5,
                                 application_name="vigie-lab-app")
            )
        except psycopg2.OperationalError as e:
            refusal = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            break
    # Only a refusal for want of slots means the fault holds (not a bad password, a timeout).
    if refusal is None or not ("remaining connection slots" in refusal or "too many" in refusal):
        print(f"could not saturate: {len(held)} connections held, then: {refusal}", flush=True)
        sys.exit(1)
    print(f"holding {len(held)} connections; next login refused: {refusal}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    for c in held:
        c.close()
    print("released", flush=True)


if __name__ == "__main__":
    main()
