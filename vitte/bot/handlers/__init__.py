"""aiogram routers. Each module has `make_router(core) -> Router` (a router can belong to one
dispatcher only, so every `build_dispatcher` call makes fresh ones)."""
