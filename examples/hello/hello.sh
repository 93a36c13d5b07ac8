# hello: print this container's machine (uname -m) and serve it over HTTP on $PORT.
bb=/bin/busybox
machine=$($bb uname -m)
$bb mkdir -p /www
echo "hello from $machine" > /www/index.html
echo "hello from $machine, serving on port ${PORT:-8080}"
exec $bb httpd -f -p "${PORT:-8080}" -h /www
