"""The Python peer of the Telegram row: an aiogram 3 bot answering /help, polling the fake Bot API.

    python aiogram_help.py TOKEN http://127.0.0.1:PORT
"""
import asyncio
import sys

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command
from aiogram.types import Message

HELP = "I can drive your AYS repositories:\n/repo, /blueprint, /service, /run, /help"


async def main(token: str, url: str) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(url))
    bot = Bot(token=token, session=session)
    dp = Dispatcher()

    @dp.message(Command("help"))
    async def help_(message: Message) -> None:
        await message.answer(HELP)

    await dp.start_polling(bot, handle_signals=True, polling_timeout=5)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
