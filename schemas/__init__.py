"""Wire contracts between vehicles and the centre: versioned, chunked, validated."""
