"""Pieces shared by the gateway's reports: HTML building blocks, text formatting."""
