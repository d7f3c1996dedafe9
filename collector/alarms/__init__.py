"""Alarms that reach people: lifecycle, escalation (issue 15)."""
