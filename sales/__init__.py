"""Sales requests: the demo page's form (`POST /api/requests`), kept in Redis as the
privacy policy says ("Form": up to 12 months after the last contact), mailed to sales
when SMTP is configured, and served to sales and to the people who wrote them (`python -m
ops requests ...`). See docs/sales-requests.md."""
