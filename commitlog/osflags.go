package commitlog

import (
	"os"
	"time"
)

const (
	osRDWR   = os.O_RDWR
	osCREATE = os.O_CREATE
	osTRUNC  = os.O_TRUNC
	osRDONLY = os.O_RDONLY
)

var pageSize = os.Getpagesize()

var errNotExist = os.ErrNotExist

func unixNano(ns int64) time.Time { return time.Unix(0, ns) }
