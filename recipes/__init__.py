"""Recipes that build the assets brivl ships (may import brivl and viz; nothing imports them but front ends)."""
