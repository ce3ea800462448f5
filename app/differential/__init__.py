"""What a case's report computes: percentages with exact binomial intervals, the blast
percent against its marks, the M:E ratio and the other indices, progress to the target."""
