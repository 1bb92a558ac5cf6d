"""Adapters for LangChain-style frameworks (import the submodule you need)."""
