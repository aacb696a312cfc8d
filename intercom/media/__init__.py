"""Media: RTP, codecs and audio devices."""
