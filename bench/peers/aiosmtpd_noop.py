"""The Python peer of the SMTP row: aiosmtpd with a handler that accepts every mail and does nothing.

    python aiosmtpd_noop.py PORT
"""
import asyncio
import sys

from aiosmtpd.controller import Controller


class Noop:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


if __name__ == "__main__":
    controller = Controller(Noop(), hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
