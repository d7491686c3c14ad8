# Reference values for tests/test_lmm.py (spline_knots = 4): lme4 + pbkrtest with natural cubic
# splines (splines::ns, knots at the 5/35/65/95% quantiles of each continuous individual covariate,
# the outer two as boundary knots: the space of a 4-knot restricted cubic spline) on the
# "interior" trial of lmm_small_trials.csv.
#   Rscript tests/data/lmm_rcs_reference.R   (from the repository root)
# Writes tests/data/lmm_rcs_reference.csv: the CATE of every row, and the ATE contrast's estimate,
# Kenward-Roger SE and df (the last row, row = 0).
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(splines)})
d <- read.csv("tests/data/lmm_small_trials.csv")
d <- d[d$dataset == "interior", ]
spl <- function(v) {
  q <- quantile(d[[v]], c(0.05, 0.35, 0.65, 0.95), type = 7)
  sprintf("ns(%s, knots = c(%.17g, %.17g), Boundary.knots = c(%.17g, %.17g))", v, q[2], q[3], q[1], q[4])
}
terms <- c(spl("X1"), spl("X2"), "X3", spl("X4"), "V1", "V2")
rhs <- paste0("treatment * (", paste(terms, collapse = " + "), ")")
m <- lmerTest::lmer(as.formula(paste("outcome ~", rhs, "+ (1 | cluster)")), data = d, REML = TRUE)
stopifnot(length(fixef(m)) == 2 + 2 * 12)
d1 <- transform(d, treatment = 1); d0 <- transform(d, treatment = 0)
cate <- predict(m, newdata = d1, re.form = NA) - predict(m, newdata = d0, re.form = NA)
ff <- as.formula(paste("~", rhs))
C <- model.matrix(ff, d1) - model.matrix(ff, d0)
t <- contest(m, matrix(colMeans(C), nrow = 1), joint = FALSE, ddf = "Kenward-Roger", confint = TRUE)
res <- rbind(data.frame(row = seq_len(nrow(d)), cate = unname(cate), se = NA, df = NA),
             data.frame(row = 0, cate = t$Estimate, se = t$`Std. Error`, df = t$df))
write.csv(res, "tests/data/lmm_rcs_reference.csv", row.names = FALSE)
print(tail(res), digits = 10)
