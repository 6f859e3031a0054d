# SDET-like: one user's session of everyday commands, run by busybox sh
# (k42vmm bench --suite linux times it in the guest and on the host).
# Every command is a busybox applet found on PATH; the work happens in a
# fresh directory under $TMPDIR (default /tmp) and is removed at the end.
set -e
d=${TMPDIR:-/tmp}/sdet.$$
rm -rf "$d"
mkdir -p "$d/src" "$d/bin"
cd "$d"
seq 1 500 > nums
for i in 1 2 3 4 5 6; do
    sed "s/1/x$i/g" nums > src/f$i.txt
    echo "file $i" >> src/f$i.txt
done
cp src/*.txt bin/
ls -l bin > listing
grep -c x bin/*.txt > counts
sort -rn nums | head -50 > top
find . -name '*.txt' | sort > found
cat bin/*.txt | wc -l > total
tr a-z A-Z < listing | cut -c1-20 > upper
mv bin old
rm -r old src
cd /
rm -r "$d"
